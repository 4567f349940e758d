"""The arithmetic the book's numbers are computed with, pinned and reported.

On one processor PyTorch is deterministic for a given seed and thread count.
Across processors it is not: PyTorch, Intel MKL and oneDNN each choose their
CPU kernels by the vector instructions the processor has (AVX-512, AVX2, …),
and kernels that add in another order give results that differ in the last
bits, which training amplifies. The book pins that choice, so that a notebook
executed on one x86-64 processor prints the same digits on any other x86-64
processor with AVX2 (Intel or AMD, Colab's CPU runtime, nearly every laptop
and CI runner):

==========================  ==============  ==============================================
variable                    value           what it pins
==========================  ==============  ==============================================
``ATEN_CPU_CAPABILITY``     ``avx2``        PyTorch's own vectorised kernels
``ONEDNN_MAX_CPU_ISA``      ``AVX2``        oneDNN (convolutions)
``MKL_CBWR``                ``COMPATIBLE``  MKL (matrix products); the only branch that
                                            Intel documents as reproducible on non-Intel
                                            processors too (``AVX2`` falls back to the
                                            processor's own branch there)
==========================  ==============  ==============================================

Each of the three changes the weights of a short training run on an AVX-512
processor (``benchmarks/kernel_knobs.py``); NumPy's own dispatch does not reach
any printed number and is left alone. MKL's ``COMPATIBLE`` branch is
documented as reproducible on every Intel and compatible processor (for a
fixed thread count); oneDNN has no such mode (its results are promised only
on identical hardware, and its blocking follows the processor's cache
sizes), so convolutions do not use it: :func:`pin_torch_backends` turns
PyTorch's oneDNN path off (``torch.backends.mkldnn.enabled = False``) and
convolutions run as PyTorch's own im2col and MKL's pinned matrix products.
:func:`kt_helpers.train.seed_everything` calls it, with the fixed thread count. The variables
are read when each library first computes, so :func:`pin_cpu_kernels` must
run before the first tensor operation: the execute script and the tests set
them before they start a kernel, and every notebook's setup cell calls it
first. A value already in the environment wins, so that the tests can run a
notebook with other kernels (``ATEN_CPU_CAPABILITY=default``) on purpose,
and ``KT_KERNELS=native`` turns the pinning off (to measure what it costs).

Digits still differ on ARM (Apple silicon), on a GPU and with another torch
version; there, the claims the prose makes (:mod:`kt_helpers.claims`) are
what must hold. Introduced in the appendix "How to run".
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, MutableMapping

__all__ = [
    "PINNED_ENV",
    "SWITCH",
    "cpu_flags",
    "machine_info",
    "pin_cpu_kernels",
    "pin_torch_backends",
    "pinned_env",
]

#: The environment that pins the CPU kernels (x86-64 only; see the module docstring).
PINNED_ENV: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
}


#: Set to ``native`` to leave the kernels to each library (benchmarks compare the two).
SWITCH = "KT_KERNELS"


def _pins(environ: Mapping[str, str]) -> bool:
    """Whether to pin: on x86-64, unless ``KT_KERNELS=native``."""
    return platform.machine().lower() in ("x86_64", "amd64") and environ.get(SWITCH) != "native"


def pinned_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: ``os.environ``) with the pinned kernels added.

    Values already present are kept. On a processor that is not x86-64 the
    copy is returned unchanged (the variables name x86 instruction sets), and
    so it is with ``KT_KERNELS=native``.
    """
    env = dict(os.environ if environ is None else environ)
    if _pins(env):
        for key, value in PINNED_ENV.items():
            env.setdefault(key, value)
    return env


def pin_cpu_kernels(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Pin the CPU kernels of this process; return the variables that are in force.

    Call it before the first tensor operation (every notebook's setup cell
    does). Values already set are kept. Pinning ``os.environ`` (the default)
    also turns oneDNN off (:func:`pin_torch_backends`). Returns the three variables as they
    now stand (empty on a processor that is not x86-64, or with ``KT_KERNELS=native``).
    """
    env = os.environ if environ is None else environ
    if not _pins(env):
        return {}
    for key, value in PINNED_ENV.items():
        env.setdefault(key, value)
    if environ is None:
        pin_torch_backends()
    return {key: env[key] for key in PINNED_ENV}


def pin_torch_backends() -> bool:
    """Turn PyTorch's oneDNN (mkldnn) path off where the kernels are pinned; return whether it did.

    oneDNN promises identical results only on identical hardware, so the book's
    convolutions run without it (PyTorch's own im2col and MKL's pinned matrix
    products). With ``KT_KERNELS=native``, or off x86-64, it is left on.
    Unlike the environment variables, this can be set at any time.
    """
    import torch

    pin = _pins(os.environ)
    torch.backends.mkldnn.enabled = not pin
    return pin


def cpu_flags() -> list[str]:
    """The processor's vector-instruction flags (``avx2``, ``avx512f``, ``amx_tile``, …).

    Read from ``/proc/cpuinfo`` on Linux; an empty list elsewhere.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What a result depends on: processor, vector instructions, kernels, threads, versions.

    Stored with every benchmark's results, so that a difference between two
    machines can be explained.
    """
    import numpy
    import torch

    return {
        "processor": _cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "vector_instructions": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "pinned_env": {key: os.environ.get(key) for key in PINNED_ENV},
        "onednn_enabled": torch.backends.mkldnn.enabled,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": sys.platform,
    }
