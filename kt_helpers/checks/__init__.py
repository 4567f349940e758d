"""Self-checks for the exercises: call a learner's function, compare it with the
reference, and say *specifically* what is wrong.

Each check takes the learner's function, runs it on small fixed inputs, prints
one message — ``"correct: ..."`` or a diagnosis of the most likely mistake —
and returns a :class:`CheckResult` (truthy when the function is correct). The
references are the book's own helpers (:func:`torch.softmax`,
:func:`kt_helpers.fusion.kd_loss`, :class:`kt_helpers.fusion.TransferObjective`,
:func:`kt_helpers.mapping.net2wider`, :func:`kt_helpers.metrics.loss_barrier`,
:func:`kt_helpers.metrics.linear_cka`), so a learner who passes a check has
re-derived exactly what the rest of the book uses.

The checks are organised like the book, one small module per topic, all
sharing :mod:`kt_helpers.checks._common` (the result, the comparisons, the
known-mistake search):

* :mod:`~kt_helpers.checks.outputs` (chapter 2) — :func:`check_soft_targets`,
  :func:`check_kd_loss`;
* :mod:`~kt_helpers.checks.linear_map` (chapter 3) — :func:`check_linear_map`;
* :mod:`~kt_helpers.checks.gradient` (chapter 3) — :func:`check_kd_gradient`;
"""

from ._common import CheckResult
from .gradient import check_kd_gradient
from .linear_map import check_linear_map
from .objective import check_fusion_loss
from .outputs import check_kd_loss, check_soft_targets
from .weights import check_loss_barrier, check_widen

__all__ = [
    "CheckResult",
    "check_fusion_loss",
    "check_kd_gradient",
    "check_kd_loss",
    "check_linear_map",
    "check_loss_barrier",
    "check_soft_targets",
    "check_widen",
]
