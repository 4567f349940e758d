"""The digits: loading, the case study's splits, shifted domains, images as row sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from kt_helpers import data

SPLITS = ("labelled", "transfer", "val", "test")


def _keys(X: torch.Tensor) -> set[bytes]:
    """One key per image (the 1,797 digits are all distinct)."""
    return {image.numpy().tobytes() for image in X}


def _parts(splits: data.DigitSplits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (getattr(splits, f"X_{name}"), getattr(splits, f"y_{name}")) for name in SPLITS}


# --- loading and views ---------------------------------------------------------------------------


def test_load_digits_tensors_are_the_sklearn_digits_scaled(digits):
    X, y = digits
    raw = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    np.testing.assert_allclose(X.squeeze(1).numpy() * 16.0, raw.images, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), raw.target)
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    assert len(_keys(X)) == 1797  # no two images are equal: the splits can be compared by content


def test_as_sequences_and_as_images_are_inverse_views():
    X = torch.rand(4, 1, 8, 8)
    seq = data.as_sequences(X)
    assert seq.shape == (4, 8, 8)
    assert torch.equal(seq[:, 2], X[:, 0, 2])  # step t is row t
    assert torch.equal(data.as_images(seq), X)
    assert data.as_sequences(seq) is seq and data.as_images(X) is X


def test_as_sequences_rejects_a_multichannel_image():
    with pytest.raises(ValueError, match=r"'X' parameter of as_sequences.*\(N, 1, H, W\).*Got \(4, 3, 8, 8\)"):
        data.as_sequences(torch.zeros(4, 3, 8, 8))


def test_as_images_rejects_a_flat_batch():
    with pytest.raises(ValueError, match=r"'X' parameter of as_images.*Got \(4, 64\)"):
        data.as_images(torch.zeros(4, 64))


# --- make_splits ---------------------------------------------------------------------------------


def test_splits_partition_the_digits(splits, digits):
    X, _ = digits
    parts = _parts(splits)
    keys = {name: _keys(X_part) for name, (X_part, _) in parts.items()}
    assert sum(len(k) for k in keys.values()) == 1797
    assert set().union(*keys.values()) == _keys(X)  # together they are every image, once
    assert splits.sizes() == {"labelled": 114, "transfer": 1030, "val": 203, "test": 450}
    assert repr(splits) == "DigitSplits(labelled=114, transfer=1030, val=203, test=450)"


def test_splits_keep_each_image_with_its_label(splits, digits):
    X, y = digits
    label_of = {image.numpy().tobytes(): int(label) for image, label in zip(X, y)}
    for X_part, y_part in _parts(splits).values():
        assert [label_of[image.numpy().tobytes()] for image in X_part] == y_part.tolist()


def test_splits_are_stratified(splits, digits):
    _, y = digits
    class_share = torch.bincount(y, minlength=10).double() / len(y)  # (10,)
    for name in ("labelled", "val", "test"):
        y_part = getattr(splits, f"y_{name}")
        counts = torch.bincount(y_part, minlength=10).double()
        assert (counts - class_share * len(y_part)).abs().max() <= 1.5, name


def test_train_is_labelled_then_transfer(splits):
    assert torch.equal(splits.X_train, torch.cat([splits.X_labelled, splits.X_transfer]))
    assert torch.equal(splits.y_train, torch.cat([splits.y_labelled, splits.y_transfer]))


def test_the_test_set_is_the_same_for_every_seed(splits):
    other = data.make_splits(0.3, seed=7, val_fraction=0.2)
    assert torch.equal(other.X_test, splits.X_test) and torch.equal(other.y_test, splits.y_test)
    assert _keys(other.X_labelled) != _keys(splits.X_labelled)  # the rest does depend on the seed


def test_the_same_seed_gives_the_same_splits(splits):
    again = data.make_splits(0.1, seed=0)
    for name, (X_part, y_part) in _parts(again).items():
        X_ref, y_ref = _parts(splits)[name]
        assert torch.equal(X_part, X_ref) and torch.equal(y_part, y_ref)


@pytest.mark.parametrize("label_fraction", [0.05, 0.5])
def test_label_fraction_sets_the_labelled_size(label_fraction):
    splits = data.make_splits(label_fraction, seed=1)
    num_train = splits.sizes()["labelled"] + splits.sizes()["transfer"]
    assert splits.sizes()["labelled"] == max(10, math.floor(label_fraction * num_train))


def test_all_labels_leave_no_transfer_set():
    splits = data.make_splits(1.0)
    assert splits.sizes()["transfer"] == 0 and splits.sizes()["labelled"] == 1144


def test_exclude_classes_moves_them_to_the_transfer_set(splits):
    hidden = data.make_splits(0.1, seed=0, exclude_classes=(3, 8))
    assert not bool(torch.isin(hidden.y_labelled, torch.tensor([3, 8])).any())
    # the labelled images of 3 and 8 went to the transfer set; nothing else moved
    moved = _keys(splits.X_labelled) - _keys(hidden.X_labelled)
    assert moved <= _keys(hidden.X_transfer)
    assert len(moved) == int(torch.isin(splits.y_labelled, torch.tensor([3, 8])).sum())
    assert _keys(hidden.X_labelled) <= _keys(splits.X_labelled)
    assert torch.equal(hidden.X_val, splits.X_val) and torch.equal(hidden.X_test, splits.X_test)


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.1, True])
def test_make_splits_rejects_a_bad_label_fraction(value):
    with pytest.raises(ValueError, match=rf"'label_fraction' parameter of make_splits.*\(0, 1\]\. Got {value!r}"):
        data.make_splits(value)


@pytest.mark.parametrize("name", ["test_fraction", "val_fraction"])
def test_make_splits_rejects_a_held_out_fraction_of_one(name):
    with pytest.raises(ValueError, match=rf"'{name}' parameter of make_splits.*\(0, 1\)\. Got 1\.0"):
        data.make_splits(0.1, **{name: 1.0})


def test_make_splits_rejects_classes_that_are_not_digits():
    with pytest.raises(ValueError, match=r"'exclude_classes'.*digit classes 0-9\. Got \[3, 10\]"):
        data.make_splits(0.1, exclude_classes=[3, 10])


# --- shift_domain --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(splits):
    return splits.X_test[:16]


def test_invert_and_flip(batch):
    assert torch.equal(data.shift_domain(batch, "invert"), 1.0 - batch)
    assert torch.equal(data.shift_domain(batch, "flip"), torch.flip(batch, dims=[3]))
    assert torch.equal(data.shift_domain(data.shift_domain(batch, "flip"), "flip"), batch)


def test_rotate_by_a_quarter_turn_is_rot90(batch):
    rotated = data.shift_domain(batch, "rotate", severity=2.0)  # 90 degrees
    torch.testing.assert_close(rotated, torch.rot90(batch, k=1, dims=(2, 3)), atol=1e-5, rtol=0)
    full_turn = data.shift_domain(batch, "rotate", severity=8.0)  # 360 degrees
    torch.testing.assert_close(full_turn, batch, atol=1e-5, rtol=0)


def test_rotate_by_45_degrees_changes_the_image(batch):
    rotated = data.shift_domain(batch, "rotate")
    assert rotated.shape == batch.shape
    assert (rotated - batch).abs().mean() > 0.05


@given(seed=st.integers(0, 1000), severity=st.floats(0.1, 3.0))
def test_noise_stays_in_range_and_depends_on_its_seed(splits, seed, severity):
    X = splits.X_test[:8]
    noisy = data.shift_domain(X, "noise", severity=severity, seed=seed)
    assert noisy.shape == X.shape
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    assert torch.equal(noisy, data.shift_domain(X, "noise", severity=severity, seed=seed))
    assert not torch.equal(noisy, data.shift_domain(X, "noise", severity=severity, seed=seed + 1))


def test_more_severe_noise_moves_the_images_further(batch):
    distances = [float((data.shift_domain(batch, "noise", severity=s) - batch).abs().mean()) for s in (0.2, 1.0, 2.0)]
    assert distances[0] < distances[1] < distances[2]


@pytest.mark.parametrize("kind", data.SHIFTS)
def test_shift_domain_leaves_its_input_unchanged(batch, kind):
    before = batch.clone()
    data.shift_domain(batch, kind)
    assert torch.equal(batch, before)


def test_shift_domain_rejects_an_unknown_kind(batch):
    with pytest.raises(ValueError, match=r"'kind'.*'rotate', 'invert', 'noise', 'flip'\. Got 'blur'"):
        data.shift_domain(batch, "blur")


@pytest.mark.parametrize("severity", [0, -1.0])
def test_shift_domain_rejects_a_severity_that_is_not_positive(batch, severity):
    with pytest.raises(ValueError, match=rf"'severity' parameter of shift_domain must be > 0\. Got {severity!r}"):
        data.shift_domain(batch, "noise", severity=severity)


def test_shift_domain_rejects_row_sequences(batch):
    pattern = r"'X' parameter of shift_domain must have 4 dimensions\. Got shape \(16, 8, 8\)"
    with pytest.raises(ValueError, match=pattern):
        data.shift_domain(batch.squeeze(1), "flip")


def test_y_student_hides_the_transfer_labels_and_aligns_with_x_train():
    splits = data.make_splits(0.1, seed=3)
    y = splits.y_student
    n = len(splits.y_labelled)
    assert y.shape == splits.y_train.shape and y.dtype == splits.y_train.dtype
    assert torch.equal(y[:n], splits.y_labelled)
    assert bool((y[n:] == -1).all())
    assert len(y) == len(splits.X_train)


def test_the_digits_are_read_as_scikit_learn_reads_them():
    from sklearn.datasets import load_digits

    from kt_helpers.data import _digits_arrays

    images, target = _digits_arrays()
    digits = load_digits()
    assert images.dtype == digits.images.dtype and np.array_equal(images, digits.images)
    assert np.array_equal(target, digits.target)


def test_the_cached_split_is_scikit_learns(tmp_path, monkeypatch):
    from sklearn.model_selection import train_test_split as sk_split

    from kt_helpers import cache
    from kt_helpers.data import train_test_split

    monkeypatch.setenv(cache.DIR_VARIABLE, str(tmp_path))
    index = np.arange(300)
    labels = index % 10
    expected = sk_split(index, test_size=0.25, stratify=labels, random_state=3)
    cache.enable()
    try:
        for _ in range(2):  # computed, then read back
            got = train_test_split(index, test_size=0.25, stratify=labels, random_state=3)
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
        other = train_test_split(index, test_size=0.25, stratify=labels, random_state=4)
        assert not np.array_equal(other[0], expected[0])
    finally:
        cache.disable()
    assert len(list(tmp_path.rglob("*.pt"))) == 2
