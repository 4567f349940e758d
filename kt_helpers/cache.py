"""A small on-disk cache of training runs, so that a model trained once is not trained again.

Several notebooks train the same model with the same seed and settings: the
case study's teacher, chapter 2's CNN, the candidates of a sweep. Each
notebook must run alone, top to bottom (in Colab too), so each one has the code
that trains it; this cache lets the second notebook that runs that code skip
the work. It memoises :func:`kt_helpers.train.fit` exactly:

* the key is everything the run depends on — the model's class, architecture
  and initial weights, the data, the objective (its class, weights and the
  tensors and settings it holds), every argument of ``fit``, the state of the
  global random-number generators, the library versions, a hash of
  ``kt_helpers``' own source, the CPU kernels in force and the thread count;
* a hit restores everything the run would have left behind — the trained
  weights of the model, of an objective that learns (a hint's map) and of
  extra parameters, the model's train/eval mode, the :class:`~kt_helpers.train.History`
  and the random-number generators' states — so the rest of the notebook runs
  on the same bits as if it had trained (a test checks this:
  ``tests/test_cache.py``).

A run whose objective cannot be keyed safely (a closure, a lambda, an object
holding something the cache does not know how to hash) is simply not cached,
and neither is a distributed or GPU run. Nothing printed in the book comes
from the cache alone: ``scripts/execute_notebooks.py`` and the tests start
from an empty cache, so the code that trains a model has run, in that same
execution, before any notebook reuses its result.

The cache is off unless a notebook's setup cell (or the caller) turns it on
with :func:`enable`, so that library code and unit tests always train. It
lives in ``$KT_CACHE_DIR`` if set, else in ``$XDG_CACHE_HOME/kt_helpers``
(``~/.cache/kt_helpers``); it is safe to delete at any time
(:func:`clear`), and ``KT_CACHE=off`` turns it off everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from . import reproducibility

__all__ = [
    "Uncacheable", "cache_dir", "clear", "disable", "enable", "enabled", "fingerprint", "memoised",
    "memoised_fit", "stats",
]

#: Environment variable naming the cache's folder.
DIR_VARIABLE = "KT_CACHE_DIR"
#: Environment variable that turns the cache off everywhere when set to ``off``.
SWITCH_VARIABLE = "KT_CACHE"
_enabled = False
#: Hits and misses since the kernel started (:func:`stats`).
_stats = {"hits": 0, "misses": 0, "uncacheable": 0}


class Uncacheable(Exception):
    """Raised by :func:`fingerprint` for a value it cannot hash safely."""


def cache_dir() -> Path:
    """The cache's folder: ``$KT_CACHE_DIR``, else ``$XDG_CACHE_HOME/kt_helpers``."""
    if os.environ.get(DIR_VARIABLE):
        return Path(os.environ[DIR_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "kt_helpers"


def enable() -> None:
    """Turn the cache on for this process (the notebooks' setup cell does), unless ``KT_CACHE=off``."""
    global _enabled
    _enabled = True


def disable() -> None:
    """Turn the cache off for this process."""
    global _enabled
    _enabled = False


def enabled() -> bool:
    """Whether :func:`kt_helpers.train.fit` uses the cache now."""
    return _enabled and os.environ.get(SWITCH_VARIABLE, "").lower() != "off"


def clear() -> None:
    """Delete the cache's folder and everything in it."""
    shutil.rmtree(cache_dir(), ignore_errors=True)


def stats() -> dict[str, int]:
    """How many ``fit`` calls this process found in the cache, trained, or could not key."""
    return dict(_stats)


def _hash_tensor(h: "hashlib._Hash", t: Tensor) -> None:
    t = t.detach()
    h.update(f"T{t.dtype}{tuple(t.shape)}{t.device.type}{t.requires_grad}".encode())
    h.update(t.cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
             else t.cpu().float().contiguous().numpy().tobytes())


def _feed(h: "hashlib._Hash", value: Any, depth: int = 0) -> None:
    """Hash ``value`` into ``h`` or raise :class:`Uncacheable`."""
    if depth > 20:
        raise Uncacheable("too deeply nested")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, Tensor):
        _hash_tensor(h, value)
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            raise Uncacheable("object array")
        h.update(f"A{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (np.integer, np.floating, np.bool_)):
        h.update(f"{type(value).__name__}:{value.item()!r};".encode())
    elif isinstance(value, (torch.dtype, torch.device)):
        h.update(f"{value};".encode())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}[{len(value)}".encode())
        for item in value:
            _feed(h, item, depth + 1)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(f"dict[{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(h, key, depth + 1)
            _feed(h, value[key], depth + 1)
        h.update(b"]")
    elif isinstance(value, nn.Module):
        _feed_module(h, value, depth)
    elif isinstance(value, functools.partial):
        h.update(b"partial(")
        _feed(h, value.func, depth + 1)
        _feed(h, value.args, depth + 1)
        _feed(h, value.keywords, depth + 1)
        h.update(b")")
    elif callable(value) and getattr(value, "__module__", "").startswith(("kt_helpers", "torch")):
        qualname = getattr(value, "__qualname__", "")
        if not qualname or "<" in qualname or getattr(value, "__closure__", None):
            raise Uncacheable(f"the function {qualname or value!r} is a closure or a lambda")
        h.update(f"fn:{value.__module__}.{qualname};".encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(f"dc:{type(value).__module__}.{type(value).__qualname__}".encode())
        _feed(h, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1)
    else:
        raise Uncacheable(f"cannot hash a {type(value).__qualname__}")


def _feed_module(h: "hashlib._Hash", module: nn.Module, depth: int) -> None:
    """A module: its class, structure, train/eval modes, weights and the plain values it holds."""
    cls = type(module)
    for sub in module.modules():
        kind = type(sub)
        # A class defined in a notebook may share its name and layers with
        # another notebook's but not its forward(): only the library's classes are keyed.
        if not kind.__module__.startswith(("kt_helpers.", "torch.")) or "<" in kind.__qualname__:
            raise Uncacheable(f"the module class {kind.__module__}.{kind.__qualname__} is not kt_helpers' or torch's")
    h.update(f"M:{cls.__module__}.{cls.__qualname__}:{module!r}:".encode())
    for name, sub in module.named_modules():
        h.update(f"{name}:{sub.training};".encode())
    for name, param in module.named_parameters():  # a frozen layer trains differently
        h.update(f"{name}:{param.requires_grad};".encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        _hash_tensor(h, tensor)
    for name, sub in module.named_modules():
        plain = {k: v for k, v in vars(sub).items()
                 if not k.startswith("_") and k != "training"}
        _feed(h, plain, depth + 1)


def fingerprint(*values: Any) -> str:
    """A SHA-256 hex digest of ``values`` (tensors by their bits, modules by class,
    structure and weights); raises :class:`Uncacheable` for what it cannot hash."""
    h = hashlib.sha256()
    for value in values:
        _feed(h, value)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """A hash of kt_helpers' own source: a changed helper invalidates every entry."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _environment() -> list[Any]:
    """What else the arithmetic depends on: versions, kernels, threads."""
    return [
        torch.__version__, np.__version__, _source_hash(),
        torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(),
        {k: os.environ.get(k, "") for k in reproducibility.PINNED_ENV},
        bool(torch.backends.mkldnn.enabled),
        torch.are_deterministic_algorithms_enabled(),
    ]


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def memoised(name: str, key_values: Any, compute: Callable[[], Any]) -> Any:
    """``compute()``, a pure function of ``key_values`` (no random state), from the cache when on.

    For small results that cost an import or a computation each notebook would
    repeat (the data splits' indices, which need scikit-learn). ``name`` names
    the kind of entry (a folder of the cache).
    """
    if not enabled():
        return compute()
    try:
        key = fingerprint(name, key_values, torch.__version__, np.__version__, _source_hash())
    except Uncacheable:
        return compute()
    path = cache_dir() / name / f"{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # unreadable: compute again
            path.unlink(missing_ok=True)
    value = compute()
    try:
        _atomic_save(value, path)
    except OSError:
        pass
    return value


def memoised_fit(run: Callable[[], Any], model: nn.Module, objective: Any,
                 extra: list[nn.Parameter], key_values: dict[str, Any]) -> Any:
    """Return ``run()`` (a :func:`~kt_helpers.train.fit` call), from the cache when it has it.

    ``model``, ``objective`` and ``extra`` are what the run changes in place;
    ``key_values`` the rest of its inputs. Used by :func:`kt_helpers.train.fit`;
    see the module's docstring for what the key holds and what a hit restores.
    """
    if not enabled():
        return run()
    learner = objective if isinstance(objective, nn.Module) else None
    try:
        key = fingerprint(
            "fit", model, objective, [p for p in extra], key_values,
            {k: (v if k != "python" else repr(v)) for k, v in _rng_states().items()},
            _environment(),
        )
    except Uncacheable:
        _stats["uncacheable"] += 1
        return run()
    path = cache_dir() / "fit" / key[:2] / f"{key}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, weights_only=False)
            model.load_state_dict(entry["model"])
            if learner is not None:
                learner.load_state_dict(entry["objective"])
            with torch.no_grad():
                for param, value in zip(extra, entry["extra"], strict=True):
                    param.copy_(value)
            for name, sub in model.named_modules():
                sub.training = entry["modes"][name]
            _set_rng_states(entry["rng"])
            _stats["hits"] += 1
            return entry["history"]
        except Exception:  # an unreadable or stale entry: train instead
            path.unlink(missing_ok=True)
    result = run()
    _stats["misses"] += 1
    try:
        _atomic_save({
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "objective": learner.state_dict() if learner is not None else None,
            "extra": [p.detach().clone() for p in extra],
            "modes": {name: sub.training for name, sub in model.named_modules()},
            "rng": _rng_states(),
            "history": result,
        }, path)
    except OSError:  # a read-only or full disk: the run still counts
        pass
    return result
