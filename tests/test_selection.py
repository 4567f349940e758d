"""Step 1, selection: compare_sources, agreement_matrix, select_source."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kt_helpers import metrics, models, selection, train


@pytest.fixture(scope="module")
def candidates():
    out = {}
    for seed, name in enumerate(("a", "b", "c")):
        torch.manual_seed(seed)
        out[name] = models.MLP(hidden=(8,))
    return out


@pytest.fixture(scope="module")
def held_out(splits):
    return splits.X_val[:80], splits.y_val[:80]


def test_compare_sources_columns_and_values(candidates, held_out):
    X, y = held_out
    table = selection.compare_sources(candidates, X, y, n_bins=10)
    assert list(table.columns) == ["accuracy", "ece", "nll", "mean_agreement"]
    assert table.index.name == "model" and table.index.tolist() == ["a", "b", "c"]
    logits = {name: train.predict_logits(model, X) for name, model in candidates.items()}
    for name, z in logits.items():
        row = table.loc[name]
        assert row["accuracy"] == metrics.accuracy(z, y)
        assert row["ece"] == metrics.expected_calibration_error(F.softmax(z, dim=1), y, n_bins=10)
        assert row["nll"] == pytest.approx(float(-F.log_softmax(z, dim=1)[torch.arange(len(y)), y].mean()))
        others = [metrics.agreement(z, logits[o]) for o in logits if o != name]
        assert row["mean_agreement"] == pytest.approx(sum(others) / 2)


def test_compare_sources_with_one_candidate_has_no_agreement(candidates, held_out):
    table = selection.compare_sources({"a": candidates["a"]}, *held_out)
    assert math.isnan(table.loc["a", "mean_agreement"])


def test_compare_sources_rejects_no_candidate(held_out):
    with pytest.raises(ValueError, match=r"'models' parameter of compare_sources.*at least one model\. Got none"):
        selection.compare_sources({}, *held_out)


def test_compare_sources_rejects_mismatched_rows(candidates, held_out):
    X, y = held_out
    with pytest.raises(ValueError, match=r"'X' and 'y' parameters of compare_sources.*Got 80 and 79"):
        selection.compare_sources(candidates, X, y[:-1])


def test_agreement_matrix_is_symmetric_with_ones_on_the_diagonal(candidates, held_out):
    X, _ = held_out
    matrix = selection.agreement_matrix(candidates, X)
    assert matrix.index.tolist() == matrix.columns.tolist() == ["a", "b", "c"]
    assert (matrix.values == matrix.values.T).all()
    assert (matrix.values.diagonal() == 1.0).all()
    za, zb = train.predict_logits(candidates["a"], X), train.predict_logits(candidates["b"], X)
    assert matrix.loc["a", "b"] == metrics.agreement(za, zb)


@pytest.fixture()
def table():
    return pd.DataFrame(
        {
            "accuracy": [0.90, 0.95, 0.95, 0.80],
            "ece": [0.01, 0.05, 0.03, 0.20],
            "nll": [0.30, 0.20, 0.25, 0.60],
            "mean_agreement": [0.85, 0.90, 0.92, 0.70],
        },
        index=pd.Index(["w", "x", "y", "z"], name="model"),
    )


def test_select_source_picks_the_most_accurate_and_breaks_ties_by_ece(table):
    assert selection.select_source(table) == "y"  # x and y tie on accuracy; y is better calibrated
    assert selection.select_source(table, tie_break="nll") == "x"


@pytest.mark.parametrize(("by", "best"), [("ece", "w"), ("nll", "x"), ("mean_agreement", "y")])
def test_select_source_by_another_column(table, by, best):
    assert selection.select_source(table, by=by) == best


def test_select_source_on_a_compare_sources_table(candidates, held_out):
    table = selection.compare_sources(candidates, *held_out)
    most_accurate = table[table["accuracy"] == table["accuracy"].max()]
    assert selection.select_source(table) == most_accurate["ece"].idxmin()


@pytest.mark.parametrize("name", ["by", "tie_break"])
def test_select_source_rejects_an_unknown_column(table, name):
    with pytest.raises(ValueError, match=rf"'{name}' parameter of select_source.*'accuracy', .*Got 'loss'"):
        selection.select_source(table, **{name: "loss"})
