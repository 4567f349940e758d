"""Measuring what a model costs: parameters, multiply-accumulates and wall-clock latency.

Compression (chapter 5) trades accuracy for a smaller, faster model. Three
measures of "smaller, faster", from the most to the least reproducible:

* parameters — :func:`kt_helpers.models.count_parameters`;
* multiply-accumulates per forward pass — :func:`count_macs`, counted by
  PyTorch's ``FlopCounterMode``, exact and independent of the machine;
* wall-clock latency — :func:`measure_latency`, the median of repeated timings,
  which depends on the machine, its load and the number of threads.

Introduced in chapter 5.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ._validation import check_int, check_tensor

__all__ = ["count_macs", "measure_latency"]


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 1, 8, 8)) -> int:
    """Multiply-accumulate operations (MACs) of one forward pass on an input of ``input_shape``.

    Counted by PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`,
    which records the FLOPs of every matrix product and convolution that the
    forward pass dispatches (whatever module issued it: ``Linear``,
    ``Conv2d``, the gates of a ``GRU`` or ``LSTM``, a bare ``@``), at two
    FLOPs per multiply-accumulate:

    .. math::
        \\text{MACs} = \\tfrac12\\,\\text{FLOPs}, \\qquad
        \\text{Linear}: N\\,d_\\text{in}\\,d_\\text{out}, \\qquad
        \\text{Conv2d}: \\text{out.numel()}\\cdot\\frac{C_\\text{in}}{\\text{groups}}\\,k_h k_w .

    Biases, activations, the element-wise gate arithmetic of a recurrent cell
    and pooling are not counted (they are cheap next to these). With the
    default batch of one image the result is the cost per image; it grows
    linearly with the batch. For a one-layer GRU of hidden size h reading
    L rows of d pixels it is L · 3h(d + h), plus the head.

    Args:
        model: the model to measure.
        input_shape: shape of the zero input to run, batch dimension first.

    Returns:
        The number of MACs, an int.

    Example:
        >>> count_macs(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)))
        2368
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"The 'model' parameter of count_macs must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            "The 'input_shape' parameter of count_macs must be a sequence of positive integers, "
            f"batch dimension first. Got {input_shape!r} instead."
        )
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    X: Tensor,
    *,
    repeats: int = 50,
    warmup: int = 5,
    num_threads: int | None = None,
) -> float:
    """Median wall-clock time, in seconds, of one forward pass of ``model`` on the batch ``X``.

    The model runs in evaluation mode under :func:`torch.inference_mode`;
    ``warmup`` untimed passes come first (they pay one-off costs such as
    memory allocation), then ``repeats`` passes are each timed with
    :func:`time.perf_counter` and the median is returned, which is robust to
    the occasional pause of a busy machine. The model's mode and PyTorch's
    thread count are restored afterwards.

    Warning:
        A latency is a property of the machine as much as of the model:
        compare models only with times measured in the same run, on the same
        machine, with the same ``num_threads``. For tiny models the time is
        mostly fixed overhead (Python, dispatch), not arithmetic.

    Args:
        model: the model to time (on the device of its parameters).
        X: one batch of inputs, of shape (N, ...).
        repeats: timed passes, >= 1.
        warmup: untimed passes before timing, >= 0.
        num_threads: if given, the number of CPU threads PyTorch uses while timing.

    Returns:
        The median time per forward pass, in seconds (a float).
    """
    check_tensor(X, "measure_latency", "X")
    check_int(repeats, "measure_latency", "repeats")
    check_int(warmup, "measure_latency", "warmup", minimum=0)
    if num_threads is not None:
        check_int(num_threads, "measure_latency", "num_threads")
    param = next(model.parameters(), None)
    if param is not None:
        X = X.to(param.device)
    synchronize = torch.cuda.synchronize if X.is_cuda else (lambda: None)
    was_training = model.training
    old_threads = torch.get_num_threads()
    model.eval()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        for _ in range(warmup):
            model(X)
        synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(X)
            synchronize()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return statistics.median(times)
