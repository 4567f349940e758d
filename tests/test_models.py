"""The book's models: shapes and the shared ``features`` / ``head`` interface."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kt_helpers import models


def _images(N: int = 5) -> torch.Tensor:
    return torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(0))


MODELS = {
    "cnn": lambda: models.DigitCNN(channels=(4, 8), feature_dim=12),
    "gru": lambda: models.RowRNN(hidden_size=7),
    "lstm": lambda: models.RowRNN(hidden_size=7, cell="lstm", num_layers=2),
    "mlp": lambda: models.MLP(hidden=(9, 6)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_output_and_feature_shapes(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    X = _images()
    assert model(X).shape == (5, 10)
    assert model.features(X).shape == (5, model.feature_dim)
    assert model.head.in_features == model.feature_dim


@pytest.mark.parametrize("name", list(MODELS))
def test_model_is_head_of_features(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    X = _images()
    with torch.no_grad():
        assert torch.equal(model(X), model.head(model.features(X)))


def test_digit_cnn_features_are_its_body():
    model = models.DigitCNN()
    X = _images()
    with torch.no_grad():
        assert torch.equal(model.features(X), model.body(X))
    assert model.feature_dim == 64 and model.head.out_features == 10


def test_row_rnn_reads_images_and_row_sequences_alike():
    torch.manual_seed(0)
    model = models.RowRNN(hidden_size=5)
    X = _images()
    with torch.no_grad():
        assert torch.equal(model(X), model(X.squeeze(1)))
        out, _ = model.rnn(X.squeeze(1))  # (N, 8 rows, 5)
        assert torch.equal(model.features(X), out[:, -1])
    assert isinstance(models.RowRNN(cell="lstm").rnn, nn.LSTM)


def test_mlp_accepts_images_and_flat_vectors():
    torch.manual_seed(0)
    model = models.MLP(hidden=(8,))
    X = _images()
    with torch.no_grad():
        assert torch.equal(model(X), model(X.reshape(5, 64)))
    assert model.head is model[-1]
    assert isinstance(model, nn.Sequential)


def test_mlp_with_other_sizes():
    model = models.MLP(hidden=(4, 3, 2), in_features=6, num_classes=5)
    assert model(torch.zeros(2, 6)).shape == (2, 5)
    assert model.feature_dim == 2
    assert sum(isinstance(m, nn.Linear) for m in model) == 4


def test_count_parameters_counts_trainable_weights_and_biases():
    model = models.MLP(hidden=(8,))
    assert models.count_parameters(model) == (64 * 8 + 8) + (8 * 10 + 10)
    model[1].weight.requires_grad_(False)  # frozen parameters do not count
    assert models.count_parameters(model) == 8 + (8 * 10 + 10)
    cnn = models.DigitCNN(channels=(2, 3), feature_dim=4)
    expected = (1 * 2 * 9 + 2) + (2 * 3 * 9 + 3) + (3 * 16 * 4 + 4) + (4 * 10 + 10)
    assert models.count_parameters(cnn) == expected


def test_row_rnn_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match=r"'cell' parameter of RowRNN must be one of 'gru', 'lstm'\. Got 'rnn'"):
        models.RowRNN(cell="rnn")


def test_row_rnn_rejects_a_zero_hidden_size():
    with pytest.raises(ValueError, match=r"'hidden_size' parameter of RowRNN.*integer >= 1\. Got 0"):
        models.RowRNN(hidden_size=0)


def test_mlp_rejects_a_zero_width():
    with pytest.raises(ValueError, match=r"'hidden' parameter of MLP.*integer >= 1\. Got 0"):
        models.MLP(hidden=(8, 0))


@pytest.mark.parametrize("name", list(MODELS))
def test_return_features_gives_logits_and_features_in_one_call(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    X = _images()
    with torch.no_grad():
        logits, features = model(X, return_features=True)
        assert torch.equal(features, model.features(X))
        assert torch.equal(logits, model(X))
