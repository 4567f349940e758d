"""Self-checks for the exercises: call a learner's function, compare it with the
reference, and say *specifically* what is wrong.

Each check takes the learner's function, runs it on small fixed inputs, prints
one message — ``"correct: ..."`` or a diagnosis of the most likely mistake —
and returns a :class:`CheckResult` (truthy when the function is correct). The
references are the book's own helpers (:func:`torch.softmax`,
:func:`kt_helpers.fusion.kd_loss`, :class:`kt_helpers.fusion.TransferObjective`,
:func:`kt_helpers.mapping.net2wider`, :func:`kt_helpers.metrics.loss_barrier`,
:func:`kt_helpers.metrics.linear_cka`, :func:`kt_helpers.fusion.greedy_soup`), so a learner who passes a check has
re-derived exactly what the rest of the book uses.

The checks are organised like the book, one small module per topic, all
sharing ``kt_helpers.checks._common`` (the result, the comparisons, the search
for the known mistakes that explain a wrong result); every check is imported
here, so ``checks.check_kd_loss(fn)`` works whatever its module:

* ``outputs`` (chapter 2) — :func:`check_soft_targets`, :func:`check_kd_loss`;
* ``linear_map`` and ``gradient`` (chapter 3) — :func:`check_linear_map`,
  :func:`check_kd_gradient`;
* ``objective`` (chapter 4) — :func:`check_fusion_loss`, the case study's
  fusion loss that :class:`~kt_helpers.fusion.TransferObjective` computes;
* ``weights`` and ``soups`` (chapter 5) — :func:`check_widen` (Net2WiderNet),
  :func:`check_loss_barrier`, :func:`check_greedy_soup` (a soup's ingredients,
  chosen on validation data);
* ``similarity`` (chapter 7) — :func:`check_linear_cka`;
* ``logit_matching`` (chapter 8) — :func:`check_logit_matching`, the
  high-temperature limit of distillation.
"""

from ._common import CheckResult
from .gradient import check_kd_gradient
from .linear_map import check_linear_map
from .logit_matching import check_logit_matching
from .objective import check_fusion_loss
from .outputs import check_kd_loss, check_soft_targets
from .similarity import check_linear_cka
from .soups import check_greedy_soup
from .weights import check_loss_barrier, check_widen

__all__ = [
    "CheckResult",
    "check_fusion_loss",
    "check_greedy_soup",
    "check_kd_gradient",
    "check_kd_loss",
    "check_linear_cka",
    "check_linear_map",
    "check_logit_matching",
    "check_loss_barrier",
    "check_soft_targets",
    "check_widen",
]
