"""Step 2 of 4 — knowledge extraction: take the source model's knowledge out.

The source document says knowledge "is usually the model's weights, features
or rules". Here each is one function:

* outputs — :func:`soft_targets`, the class probabilities at a temperature
  (Hinton et al., 2015), and :func:`logits`;
* features — :func:`features`, a named layer's activations, read with a forward hook;
* weights — :func:`weights`, a detached copy of the state dict.

Extraction runs the source once, in evaluation mode and without gradients, so
that the knowledge can be cached and reused for every epoch of training.
Introduced in chapter 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import check_positive, check_tensor
from .train import _device_of, predict_logits

__all__ = ["features", "layer_names", "logits", "sharded", "soft_targets", "weights"]


def logits(model: nn.Module, X: Tensor) -> Tensor:
    """The model's logits for ``X`` (evaluation mode, no gradient), on the CPU.

    Shape:
        - X: (N, ...). Output: (N, num_classes).
    """
    return predict_logits(model, X)


def soft_targets(model: nn.Module, X: Tensor, temperature: float = 1.0) -> Tensor:
    """Class probabilities softened by a temperature: ``softmax(model(X) / T)``.

    .. math::
        p_i = \\frac{\\exp(z_i / T)}{\\sum_j \\exp(z_j / T)}

    At ``T = 1`` these are the model's ordinary probabilities; a higher ``T``
    raises the small probabilities of the wrong classes, the "dark knowledge"
    of which wrong classes the model finds similar (Hinton et al., 2015).
    The model runs in evaluation mode without gradients; its mode is restored.

    Args:
        model: the source (teacher) model.
        X: inputs of shape (N, ...).
        temperature: τ > 0.

    Returns:
        Probabilities of shape (N, num_classes), rows summing to 1.

    Example:
        >>> model = torch.nn.Linear(4, 3)
        >>> p = soft_targets(model, torch.zeros(2, 4), temperature=2.0)
        >>> p.shape, torch.allclose(p.sum(dim=1), torch.ones(2))
        (torch.Size([2, 3]), True)
    """
    temperature = check_positive(temperature, "soft_targets", "temperature")
    check_tensor(X, "soft_targets", "X")
    return F.softmax(logits(model, X) / temperature, dim=1)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the model's sub-modules, as accepted by :func:`features`.

    Example:
        >>> layer_names(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
        ['0', '1']
    """
    return [name for name, _ in model.named_modules() if name]


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(
                "The 'layer' parameter of features must be a sub-module of 'model'. "
                f"Got a {type(layer).__name__} that is not part of the model."
            )
        return layer
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        raise ValueError(
            "The 'layer' parameter of features must name a sub-module of 'model', one of "
            f"{layer_names(model)}. Got {layer!r} instead."
        )
    return modules[layer]


@torch.no_grad()
def features(
    model: nn.Module, X: Tensor, layer: str | nn.Module, *, batch_size: int = 1024
) -> Tensor:
    """A layer's activations for ``X``, read with a forward hook.

    The model runs as usual (evaluation mode, no gradient); a hook registered
    on ``layer`` copies that layer's output, and is removed afterwards even if
    the forward pass fails. Recurrent layers return ``(output, state)``: the
    hook keeps the output.

    Args:
        model: the source model.
        X: inputs of shape (N, ...).
        layer: a sub-module or its name (see :func:`layer_names`), e.g.
            ``"body.relu3"`` for the penultimate features of :class:`~kt_helpers.models.DigitCNN`.
        batch_size: samples per forward pass.

    Returns:
        Activations of shape (N, ...) as the layer produces them, on the CPU.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> features(net, torch.zeros(5, 4), "1").shape
        torch.Size([5, 3])
    """
    check_tensor(X, "features", "X")
    module = _resolve_layer(model, layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        out = output[0] if isinstance(output, tuple) else output
        captured.append(out.detach().cpu())

    was_training = model.training
    model.eval()
    device = _device_of(model)
    handle = module.register_forward_hook(hook)
    try:
        for start in range(0, len(X), batch_size):
            model(X[start : start + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


def weights(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's state dict: its knowledge as weights.

    Changing the copy never changes the model, and vice versa.

    Example:
        >>> w = weights(torch.nn.Linear(2, 1))
        >>> sorted(w)
        ['bias', 'weight']
    """
    return {name: value.detach().clone() for name, value in model.state_dict().items()}



def sharded(extract: Callable[[Tensor], Tensor], X: Tensor) -> Tensor:
    """Run an extraction on this process's shard of ``X`` and gather all shards, in order.

    With N processes (see :func:`kt_helpers.train.init_distributed`), process
    ``r`` extracts the knowledge of samples ``r·n .. (r+1)·n − 1`` only
    (``n = len(X) / N``), once; the shards are then gathered so that every
    process holds the whole result, row ``i`` for sample ``i`` — aligned with
    its sample, as :func:`kt_helpers.train.fit` needs. In a single process it
    is simply ``extract(X)``. Appendix "Scaling up".

    Args:
        extract: e.g. ``lambda X: logits(teacher, X)``; must return one row per sample.
        X: inputs of shape (N, ...), the same on every process.

    Returns:
        The extracted knowledge for all of ``X``, of shape (N, ...), on the CPU.

    Example:
        >>> sharded(lambda X: 2 * X, torch.arange(4.0))
        tensor([0., 2., 4., 6.])
    """
    from .train import distributed_context

    check_tensor(X, "sharded", "X")
    ctx = distributed_context()
    if ctx.world_size == 1:
        return extract(X)
    if len(X) % ctx.world_size:
        raise ValueError(
            f"The 'X' parameter of sharded must have a number of samples divisible by the "
            f"world size {ctx.world_size}. Got {len(X)} samples instead."
        )
    import torch.distributed as dist

    n = len(X) // ctx.world_size
    local = extract(X[ctx.rank * n : (ctx.rank + 1) * n]).contiguous().to(ctx.device)
    if len(local) != n:
        raise ValueError(
            f"The 'extract' parameter of sharded must return one row per sample. "
            f"Got {len(local)} rows for {n} samples instead."
        )
    shards = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(shards, local)
    return torch.cat(shards).cpu()
