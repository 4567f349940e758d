"""Shared fixtures of the unit tests.

Property tests run few examples (the whole unit suite stays under a minute on
two CPU cores) and keep no example database in the repository; PyTorch runs on
one thread.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import settings
from torch import nn

from kt_helpers import data, train

settings.register_profile("kt", max_examples=25, deadline=None, database=None)
settings.load_profile("kt")

# The tests use tiny tensors, for which extra threads only cost synchronisation
# (on a busy machine, OpenMP's barriers make a BatchNorm forward 50x slower).
# seed_everything keeps this count for later calls that name none.
train.seed_everything(0, num_threads=1)


@pytest.fixture(scope="session")
def splits() -> data.DigitSplits:
    """The book's default splits (10% labels, seed 0)."""
    return data.make_splits(0.1, seed=0)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as images and labels."""
    return data.load_digits_tensors()


def _random_mlp(
    widths: list[int], *, in_features: int = 5, out_features: int = 3, seed: int = 0
) -> nn.Sequential:
    """A random MLP Linear(in, w0), ReLU, ..., Linear(w_last, out), seeded."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = in_features
    for h in widths:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@pytest.fixture(scope="session")
def random_mlp():
    """A factory of seeded random MLPs: ``random_mlp([8, 6], seed=1)``."""
    return _random_mlp


def _perturbed(model: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of ``model`` with every weight moved by Gaussian noise of std ``scale``."""
    gen = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return out


@pytest.fixture(scope="session")
def perturbed():
    """A factory of perturbed copies: ``perturbed(model, scale, seed)`` (a fine-tuning stand-in)."""
    return _perturbed
