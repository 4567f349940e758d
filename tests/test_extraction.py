"""Step 2, extraction: soft_targets, logits, features (through hooks), weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kt_helpers import data, extraction, models


def _dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


@pytest.fixture()
def cnn():
    torch.manual_seed(0)
    return models.DigitCNN(channels=(4, 8), feature_dim=12)


@pytest.fixture()
def images():
    return torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# --- soft_targets and logits ---------------------------------------------------------------------


@given(temperature=st.floats(0.1, 50.0), seed=st.integers(0, 2**16))
def test_soft_targets_are_softmax_of_logits_over_temperature(temperature, seed):
    net = _dropout_net()
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed))
    p = extraction.soft_targets(net, X, temperature)
    net.eval()
    with torch.no_grad():
        expected = F.softmax(net(X) / temperature, dim=1)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(6))
    assert bool((p >= 0).all())


@given(seed=st.integers(0, 2**16), t1=st.floats(0.2, 10.0), factor=st.floats(1.0, 10.0))
def test_a_higher_temperature_never_lowers_the_entropy(seed, t1, factor):
    net = _dropout_net()
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed))

    def entropy(p):
        return -(p * p.clamp_min(1e-30).log()).sum(dim=1)

    low, high = extraction.soft_targets(net, X, t1), extraction.soft_targets(net, X, t1 * factor)
    assert bool((entropy(high) >= entropy(low) - 1e-5).all())


def test_soft_targets_run_in_eval_mode_without_gradient():
    net = _dropout_net()
    net.train()
    X = torch.randn(8, 4)
    first, second = extraction.soft_targets(net, X, 2.0), extraction.soft_targets(net, X, 2.0)
    assert torch.equal(first, second)  # dropout is off
    assert not first.requires_grad and first.grad_fn is None
    assert net.training  # the model's mode is restored
    net.eval()
    assert not extraction.soft_targets(net, X).requires_grad
    assert not net.training


def test_logits_are_the_eval_mode_outputs():
    net = _dropout_net()
    net.train()
    X = torch.randn(8, 4)
    out = extraction.logits(net, X)
    assert net.training and not out.requires_grad
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(out, net(X))


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), float("nan")])
def test_soft_targets_rejects_a_bad_temperature(temperature):
    with pytest.raises(ValueError, match=rf"'temperature' parameter of soft_targets.*> 0\. Got {temperature!r}"):
        extraction.soft_targets(_dropout_net(), torch.zeros(2, 4), temperature)


# --- features ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "k"), [("body.conv1", 1), ("body.relu2", 4), ("body.pool", 5), ("body.fc", 7), ("body.relu3", 8)]
)
def test_features_of_the_cnn_are_the_body_prefix(cnn, images, layer, k):
    out = extraction.features(cnn, images, layer)
    with torch.no_grad():
        torch.testing.assert_close(out, cnn.body[:k](images))


def test_features_of_the_last_body_layer_are_model_features(cnn, images):
    with torch.no_grad():
        torch.testing.assert_close(extraction.features(cnn, images, "body.relu3"), cnn.features(images))
        torch.testing.assert_close(extraction.features(cnn, images, "head"), cnn(images))


def test_features_of_the_rnn_keep_its_output_sequence(images):
    torch.manual_seed(0)
    rnn = models.RowRNN(hidden_size=6)
    out = extraction.features(rnn, images, "rnn")  # GRU returns (output, state): the output is kept
    with torch.no_grad():
        expected, _ = rnn.rnn(data.as_sequences(images))  # (N, 8, 6)
    assert out.shape == (10, 8, 6)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:, -1], rnn.features(images).detach())


def test_features_accepts_the_module_itself(cnn, images):
    torch.testing.assert_close(
        extraction.features(cnn, images, cnn.body.fc), extraction.features(cnn, images, "body.fc")
    )


def test_features_in_batches_equal_one_pass(cnn, images):
    torch.testing.assert_close(
        extraction.features(cnn, images, "body.fc", batch_size=3), extraction.features(cnn, images, "body.fc")
    )


def test_features_removes_its_hook_and_restores_the_mode(cnn, images):
    cnn.train()
    out = extraction.features(cnn, images, "body.fc")
    assert not out.requires_grad
    assert all(len(m._forward_hooks) == 0 for m in cnn.modules())
    assert cnn.training


def test_features_removes_its_hook_when_the_forward_pass_fails(cnn):
    with pytest.raises(RuntimeError):
        extraction.features(cnn, torch.zeros(2, 3, 8, 8), "body.fc")  # 3 channels: conv1 fails
    assert len(cnn.body.fc._forward_hooks) == 0


def test_features_rejects_an_unknown_layer_and_lists_the_names(cnn, images):
    with pytest.raises(ValueError, match=r"'layer' parameter of features.*'body.relu3'.*'head'.*Got 'fc7' instead"):
        extraction.features(cnn, images, "fc7")


def test_features_rejects_the_empty_name(cnn, images):
    with pytest.raises(ValueError, match=r"'layer'.*Got '' instead"):
        extraction.features(cnn, images, "")


def test_features_rejects_a_module_of_another_model(cnn, images):
    with pytest.raises(ValueError, match=r"'layer'.*sub-module of 'model'.*Linear that is not part"):
        extraction.features(cnn, images, nn.Linear(2, 2))


def test_layer_names_are_the_named_modules(cnn):
    names = extraction.layer_names(cnn)
    assert names == [n for n, _ in cnn.named_modules() if n]
    assert {"body", "body.conv1", "body.relu3", "head"} <= set(names)


# --- weights -------------------------------------------------------------------------------------


def test_weights_are_a_detached_copy(cnn):
    w = extraction.weights(cnn)
    assert list(w) == list(cnn.state_dict())
    assert all(not v.requires_grad for v in w.values())
    for key, value in cnn.state_dict().items():
        assert torch.equal(w[key], value)
    w["head.bias"].add_(1.0)  # changing the copy ...
    assert not torch.equal(w["head.bias"], cnn.head.bias)  # ... leaves the model alone
    with torch.no_grad():
        cnn.head.weight.zero_()  # and the other way round
    assert w["head.weight"].abs().sum() > 0
