"""The book's models: a CNN that sees images, an RNN that reads rows, an MLP.

Every model exposes the same two-part interface, so that knowledge can be
taken from one and given to another whatever their architecture:

* ``model.features(X)`` — the penultimate representation, of shape
  (N, feature_dim): the "features" that chapters 2–4 extract and map;
* ``model.head`` — the final linear layer, so ``model(X) == model.head(model.features(X))``;
* ``model(X, return_features=True)`` — both at once, ``(logits, features)``, in
  one forward call (what a :class:`~torch.nn.parallel.DistributedDataParallel`
  wrapper needs to synchronise gradients, see :mod:`kt_helpers.train`).

All models accept images of shape (N, 1, 8, 8). Introduced in chapter 1; the
CNN → RNN pair is the case study of chapter 4.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._validation import check_int, check_option
from .data import as_sequences

__all__ = ["DigitCNN", "MLP", "RowRNN", "count_parameters"]


class DigitCNN(nn.Module):
    """A small convolutional classifier for 8×8 digits (the case study's teacher).

    Architecture: two 3×3 convolutions with ReLU, a 2×2 max-pool, then a
    fully connected feature layer (``body.fc``, followed by ``body.relu3``)
    and a linear head.

    Args:
        channels: output channels of the two convolutions.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: number of classes.

    Shape:
        - Input: (N, 1, 8, 8).
        - ``features``: (N, feature_dim). Output: (N, num_classes).

    Example:
        >>> model = DigitCNN()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, *, channels: Sequence[int] = (16, 32), feature_dim: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, kernel_size=3, padding=1),  # (N, c1, 8, 8)
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(c1, c2, kernel_size=3, padding=1),  # (N, c2, 8, 8)
                relu2=nn.ReLU(),
                pool=nn.MaxPool2d(2),  # (N, c2, 4, 4)
                flatten=nn.Flatten(),  # (N, c2 * 16)
                fc=nn.Linear(c2 * 16, feature_dim),  # (N, feature_dim)
                relu3=nn.ReLU(),
            )
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, X: Tensor) -> Tensor:
        """Penultimate features, of shape (N, feature_dim)."""
        return self.body(X)

    def forward(self, X: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits, or ``(logits, features)`` with ``return_features=True``."""
        features = self.features(X)
        logits = self.head(features)
        return (logits, features) if return_features else logits


class RowRNN(nn.Module):
    """A recurrent classifier that reads a digit one row at a time (the case study's student).

    The image (N, 1, 8, 8) is read as a sequence of L = 8 steps of 8 pixels
    (one row per step); the final hidden state of the last layer is the
    feature vector, and :meth:`states` returns the state after every row.

    Args:
        hidden_size: width of the hidden state (= feature_dim).
        cell: ``"gru"`` or ``"lstm"``.
        num_layers: number of stacked recurrent layers.
        input_size: pixels per row.
        num_classes: number of classes.

    Shape:
        - Input: (N, 1, 8, 8) images or (N, L=8, 8) row sequences.
        - ``states``: (N, L, hidden_size). ``features``: (N, hidden_size). Output: (N, num_classes).

    Example:
        >>> model = RowRNN(hidden_size=32)
        >>> model.features(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        cell: str = "gru",
        num_layers: int = 1,
        input_size: int = 8,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        check_option(cell, "RowRNN", "cell", ("gru", "lstm"))
        check_int(hidden_size, "RowRNN", "hidden_size")
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)
        self.feature_dim = hidden_size

    def states(self, X: Tensor) -> Tensor:
        """The hidden state of the last layer after every row, of shape (N, L, hidden_size).

        ``states(X)[:, l - 1]`` is the state after the first ``l`` rows;
        :func:`kt_helpers.mapping.step_states` maps it, step by step, to the
        CNN's feature map (chapter 4).
        """
        seq = as_sequences(X)  # (N, L=8 rows, 8 pixels)
        out, _ = self.rnn(seq)  # (N, L, hidden_size)
        return out

    def features(self, X: Tensor) -> Tensor:
        """Final hidden state, of shape (N, hidden_size)."""
        return self.states(X)[:, -1]  # (N, hidden_size)

    def forward(self, X: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits, or ``(logits, features)`` with ``return_features=True``."""
        features = self.features(X)
        logits = self.head(features)
        return (logits, features) if return_features else logits


class MLP(nn.Sequential):
    """A multilayer perceptron on flattened images: Flatten, (Linear, ReLU) × k, Linear.

    Being a plain :class:`torch.nn.Sequential` of ``Linear`` and activation
    layers, it is the network that :func:`kt_helpers.mapping.match_weights`
    and :func:`kt_helpers.mapping.net2wider` operate on (chapters 3 and 5).

    Args:
        hidden: widths of the hidden layers.
        in_features: input size (64 pixels).
        num_classes: number of classes.

    Shape:
        - Input: (N, 1, 8, 8) or (N, 64).
        - ``features``: (N, hidden[-1]). Output: (N, num_classes).

    Example:
        >>> MLP(hidden=(32, 16))
        MLP(
          (0): Flatten(start_dim=1, end_dim=-1)
          (1): Linear(in_features=64, out_features=32, bias=True)
          (2): ReLU()
          (3): Linear(in_features=32, out_features=16, bias=True)
          (4): ReLU()
          (5): Linear(in_features=16, out_features=10, bias=True)
        )
    """

    def __init__(
        self, *, hidden: Sequence[int] = (64,), in_features: int = 64, num_classes: int = 10
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            check_int(h, "MLP", "hidden")
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        self.feature_dim = width

    @property
    def head(self) -> nn.Linear:  # type: ignore[override]
        return self[-1]

    def features(self, X: Tensor) -> Tensor:
        """Output of the last hidden layer, of shape (N, hidden[-1])."""
        for layer in list(self)[:-1]:
            X = layer(X)
        return X

    def forward(self, X: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits, or ``(logits, features)`` with ``return_features=True``."""
        features = self.features(X)
        logits = self[-1](features)
        return (logits, features) if return_features else logits


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``.

    Example:
        >>> count_parameters(torch.nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
