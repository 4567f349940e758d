"""The help-text data, the character models and the four ways to train a student (kt_helpers.text)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from kt_helpers import text

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def splits() -> text.TextSplits:
    return text.load_help_text()


@pytest.fixture(scope="module")
def vocab(splits) -> text.CharVocab:
    return text.CharVocab.from_text(splits.train)


def tiny_model(vocab_size: int = 7, seed: int = 0, **kwargs) -> text.CharGRU:
    torch.manual_seed(seed)
    return text.CharGRU(vocab_size, embedding_dim=4, hidden_size=8, **kwargs)


# --- the text ----------------------------------------------------------------------------------


def test_split_is_disjoint_and_complete(splits):
    from pydoc_data.topics import topics

    whole = "".join(topics[name] for name in sorted(topics))
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(whole)
    assert 0.79 < len(splits.train) / len(whole) < 0.81
    assert 0.09 < len(splits.val) / len(whole) < 0.11
    # every topic is cut in three consecutive pieces: its start is in train, its end in test
    first = topics[sorted(topics)[0]]
    assert splits.train.startswith(first[: round(0.8 * len(first))])
    last = topics[sorted(topics)[-1]]
    assert splits.test.endswith(last[round(0.9 * len(last)) :])


def test_split_is_fixed(splits):
    again = text.load_help_text()
    assert (again.train, again.val, again.test) == (splits.train, splits.val, splits.test)
    assert "train=" in repr(splits) and "chars" in repr(splits)


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.2, 0.1), (1.0, 0.0, 0.0), "abc", (0.5, True, 0.5)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ValueError, match="'fractions' parameter of load_help_text"):
        text.load_help_text(fractions)


def test_text_sha256_is_hex_of_utf8():
    import hashlib

    assert text.text_sha256("é") == hashlib.sha256("é".encode()).hexdigest()
    with pytest.raises(ValueError, match="'text' parameter of text_sha256"):
        text.text_sha256(b"bytes")


# --- the vocabulary ----------------------------------------------------------------------------


def test_vocab_round_trip_on_the_held_out_text(splits, vocab):
    ids = vocab.encode(splits.val)
    assert ids.shape == (len(splits.val),) and ids.dtype == torch.long
    decoded = vocab.decode(ids)
    # every character the training text has comes back; others become the unknown symbol
    assert len(decoded) == len(splits.val)
    for original, back in zip(splits.val, decoded):
        assert back == (original if original in vocab.chars else text.CharVocab.UNKNOWN)


@given(st.text(alphabet="abcxyz \n", min_size=1, max_size=40))
def test_vocab_round_trip_property(s):
    vocab = text.CharVocab.from_text(s)
    assert vocab.decode(vocab.encode(s)) == s
    assert len(vocab) == len(set(s)) + 1
    assert int(vocab.encode(s).min()) >= 1  # 0 is only for unknown characters


def test_vocab_unknown_is_zero():
    vocab = text.CharVocab("ab")
    assert vocab.encode("abz").tolist() == [1, 2, 0]
    assert vocab.decode([0, 2]) == "\ufffdb"


@pytest.mark.parametrize("chars", ["", "aa", 3, "a\ufffd"])
def test_vocab_rejects_bad_chars(chars):
    with pytest.raises(ValueError, match="'chars' parameter of CharVocab"):
        text.CharVocab(chars)


def test_vocab_rejects_bad_input():
    vocab = text.CharVocab("ab")
    with pytest.raises(ValueError, match="'text' parameter of CharVocab.encode"):
        vocab.encode(["a"])
    with pytest.raises(ValueError, match="'ids' parameter of CharVocab.decode"):
        vocab.decode([3])
    with pytest.raises(ValueError, match="'ids' parameter of CharVocab.decode"):
        vocab.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="'text' parameter of CharVocab.from_text"):
        text.CharVocab.from_text("")


# --- batches -----------------------------------------------------------------------------------


def test_random_windows_are_consecutive_text():
    ids = torch.arange(100)
    batch = text.random_windows(ids, seq_len=10, batch_size=6, generator=torch.Generator().manual_seed(0))
    assert batch.shape == (6, 11)
    assert torch.equal(batch[:, 1:] - batch[:, :-1], torch.ones(6, 10, dtype=torch.long))
    assert int(batch.max()) <= 99


def test_text_batches_are_seeded():
    ids = torch.arange(50)
    a = text.text_batches(ids, num_steps=3, seq_len=5, batch_size=4, seed=1)
    b = text.text_batches(ids, num_steps=3, seq_len=5, batch_size=4, seed=1)
    c = text.text_batches(ids, num_steps=3, seq_len=5, batch_size=4, seed=2)
    assert a.shape == (3, 4, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_windows_score_every_character_but_the_first_once():
    ids = torch.arange(23)
    w = text.windows(ids, 5)
    assert w.shape == (4, 6)
    targets = w[:, 1:].reshape(-1)
    assert targets.tolist() == list(range(1, 21))  # the trailing 21, 22 are dropped


def test_batch_validation_names_the_argument():
    with pytest.raises(ValueError, match="'ids' parameter of random_windows"):
        text.random_windows(torch.arange(5), seq_len=5, batch_size=2, generator=torch.Generator())
    with pytest.raises(ValueError, match="'seq_len' parameter of random_windows"):
        text.random_windows(torch.arange(50), seq_len=0, batch_size=2, generator=torch.Generator())
    with pytest.raises(ValueError, match="'ids' parameter of windows"):
        text.windows(torch.arange(3.0), 2)
    with pytest.raises(ValueError, match="'ids' parameter of windows"):
        text.windows(torch.arange(3), 5)
    with pytest.raises(ValueError, match="'num_steps' parameter of text_batches"):
        text.text_batches(torch.arange(50), num_steps=0, seq_len=5, batch_size=2, seed=0)


# --- the model and sampling --------------------------------------------------------------------


def test_model_shapes_and_state_carry_over():
    model = tiny_model(num_layers=2)
    ids = torch.randint(0, 7, (3, 9), generator=torch.Generator().manual_seed(0))
    logits, state = model(ids)
    assert logits.shape == (3, 9, 7) and state.shape == (2, 3, 8)
    # reading in two pieces with the state carried over is reading in one go
    first, s = model(ids[:, :4])
    second, _ = model(ids[:, 4:], s)
    torch.testing.assert_close(torch.cat([first, second], dim=1), logits)


def test_model_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="'ids' parameter of CharGRU.forward"):
        model(torch.tensor([[7]]))
    with pytest.raises(ValueError, match="'ids' parameter of CharGRU.forward"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="'vocab_size' parameter of CharGRU"):
        text.CharGRU(1)


def test_sample_keeps_the_prompt_and_is_seeded():
    model = tiny_model()
    prompt = torch.tensor([[1, 2], [3, 4]])
    a = text.sample(model, prompt, 5, generator=torch.Generator().manual_seed(0))
    b = text.sample(model, prompt, 5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 7) and torch.equal(a[:, :2], prompt) and torch.equal(a, b)
    assert model.training  # back in the mode it was in


def test_sample_follows_the_model_distribution():
    # a model whose head ignores the input: every draw comes from softmax(bias)
    model = tiny_model(vocab_size=3)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    draws = text.sample(model, torch.zeros(4000, 1, dtype=torch.long), 1, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws[:, 1], minlength=3).float() / 4000
    torch.testing.assert_close(freq, F.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.03, rtol=0)
    # a low temperature picks the most likely symbol
    cold = text.sample(model, torch.zeros(50, 1, dtype=torch.long), 1, temperature=0.01)
    assert torch.all(cold[:, 1] == 2)


def test_sample_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="'temperature' parameter of sample"):
        text.sample(model, torch.tensor([[1]]), 2, temperature=0.0)
    with pytest.raises(ValueError, match="'prompt' parameter of sample"):
        text.sample(model, torch.zeros(2, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="'num_chars' parameter of sample"):
        text.sample(model, torch.tensor([[1]]), -1)


# --- bits per character ------------------------------------------------------------------------


def test_bits_per_char_against_a_loop():
    """An independent computation: log2 of every next character's probability, one at a time."""
    model = tiny_model().eval()
    ids = torch.randint(0, 7, (41,), generator=torch.Generator().manual_seed(1))
    seq_len = 8
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, 40 - seq_len + 1, seq_len):  # windows [start, start + 8]
            state = None
            for t in range(seq_len):
                logits, state = model(ids[start + t].view(1, 1), state)
                p = torch.softmax(logits[0, 0].double(), 0)[ids[start + t + 1]]
                total -= math.log2(float(p))
                n += 1
    assert n == 40
    assert text.bits_per_char(model, ids, seq_len=seq_len, batch_size=2) == pytest.approx(total / n, abs=1e-5)


def test_bits_per_char_of_a_uniform_model_is_log2_v():
    model = tiny_model(vocab_size=5)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    ids = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(0))
    assert text.bits_per_char(model, ids, seq_len=16) == pytest.approx(math.log2(5), abs=1e-6)


def test_bits_per_char_skip_scores_only_the_continuation():
    model = tiny_model().eval()
    w = torch.randint(0, 7, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model(w[:, :-1])
    nll = F.cross_entropy(logits[:, 4:].reshape(-1, 7), w[:, 5:].reshape(-1))
    assert text.bits_per_char(model, w, skip=4) == pytest.approx(float(nll) / math.log(2), abs=1e-5)


def test_bits_per_char_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="'skip' parameter of bits_per_char"):
        text.bits_per_char(model, torch.zeros(2, 5, dtype=torch.long), skip=4)
    with pytest.raises(ValueError, match="'ids' parameter of bits_per_char"):
        text.bits_per_char(model, torch.zeros(2, 5))
    with pytest.raises(TypeError, match="'ids' parameter of bits_per_char"):
        text.bits_per_char(model, [1, 2, 3])


# --- the objectives ----------------------------------------------------------------------------


def test_token_kd_loss_is_the_forward_kl_per_position():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    y = torch.randint(0, 5, (2, 3), generator=g)
    p, log_q = F.softmax(t, -1), F.log_softmax(s, -1)
    expected = (p * (p.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(text.token_kd_loss(s, t, y), expected)
    # with alpha = 1 it is the cross-entropy of the text
    torch.testing.assert_close(text.token_kd_loss(s, t, y, alpha=1.0), F.cross_entropy(s.reshape(6, 5), y.reshape(6)))


def test_token_kd_loss_rejects_bad_shapes():
    s = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="'targets' parameter of token_kd_loss"):
        text.token_kd_loss(s, s, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="'student_logits' and 'teacher_logits' parameters of token_kd_loss"):
        text.token_kd_loss(s, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="'alpha' parameter of kd_loss"):
        text.token_kd_loss(s, s, torch.zeros(2, 3, dtype=torch.long), alpha=2.0)


def test_reverse_kl_against_a_direct_sum():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    q, p = F.softmax(s, 1), F.softmax(t, 1)
    expected = sum(float((q[n] * torch.log(q[n] / p[n])).sum()) for n in range(4)) / 4
    assert float(text.reverse_kl(s, t)) == pytest.approx(expected, abs=1e-12)
    # it is not symmetric: KL(q || p) is kd_loss's KL(p || q) with the roles swapped
    forward = float((p * torch.log(p / q)).sum(1).mean())
    assert float(text.reverse_kl(t, s)) == pytest.approx(forward, abs=1e-12)


@given(st.integers(min_value=0, max_value=10_000))
def test_reverse_kl_is_non_negative_and_zero_only_at_the_teacher(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
    assert float(text.reverse_kl(s, t)) >= 0
    assert float(text.reverse_kl(t + 3.0, t)) == pytest.approx(0.0, abs=1e-6)  # logits up to a constant


def test_reverse_kl_gradient_reaches_only_the_student():
    s = torch.randn(2, 4, requires_grad=True)
    t = torch.randn(2, 4, requires_grad=True)
    text.reverse_kl(s, t).backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError, match="'student_logits' and 'teacher_logits' parameters of reverse_kl"):
        text.reverse_kl(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="'student_logits' parameter of reverse_kl"):
        text.reverse_kl(torch.zeros(4), torch.zeros(4))


def test_sequence_kd_batches_keep_the_prompts():
    teacher = tiny_model(seed=1)
    batches = torch.randint(0, 7, (3, 4, 10), generator=torch.Generator().manual_seed(0))
    out = text.sequence_kd_batches(teacher, batches, prompt_len=3, generator=torch.Generator().manual_seed(0), chunk_size=5)
    assert out.shape == batches.shape
    assert torch.equal(out[..., :3], batches[..., :3])
    assert not torch.equal(out, batches)
    with pytest.raises(ValueError, match="'prompt_len' parameter of sequence_kd_batches"):
        text.sequence_kd_batches(teacher, batches, prompt_len=10)


def test_on_policy_loss_is_zero_for_the_teacher_itself_and_trains_the_student():
    teacher = tiny_model(seed=1)
    batch = torch.randint(0, 7, (4, 10), generator=torch.Generator().manual_seed(0))
    same = text.on_policy_loss(teacher, teacher, batch, prompt_len=3)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)
    student = tiny_model(seed=2)
    loss = text.on_policy_loss(student, teacher, batch, prompt_len=3, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert float(loss.detach()) > 0 and student.head.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="'prompt_len' parameter of on_policy_loss"):
        text.on_policy_loss(student, teacher, batch, prompt_len=0)


def test_training_lowers_the_loss_and_is_deterministic():
    ids = torch.tensor([1, 2, 3, 4, 5, 6] * 30)  # a text a model can learn
    batches = text.text_batches(ids, num_steps=40, seq_len=8, batch_size=8, seed=0)
    a, b = tiny_model(), tiny_model()
    losses = text.train_language_model(a, batches, lr=3e-2)
    text.train_language_model(b, batches, lr=3e-2)
    assert losses[-1] < 0.5 * losses[0]
    assert text.state_dict_sha256(a) == text.state_dict_sha256(b)
    assert text.state_dict_sha256(a) != text.state_dict_sha256(tiny_model())
    with pytest.raises(ValueError, match="'schedule' parameter of train_language_model"):
        text.train_language_model(a, batches, schedule="linear")
    with pytest.raises(ValueError, match="'lr' parameter of train_language_model"):
        text.train_language_model(a, batches, lr=0)


# --- the shipped teacher -----------------------------------------------------------------------


def test_teacher_config_validation():
    with pytest.raises(ValueError, match="'hidden_size' parameter of TeacherConfig"):
        text.TeacherConfig(hidden_size=0)
    with pytest.raises(ValueError, match="'lr' parameter of TeacherConfig"):
        text.TeacherConfig(lr=-1.0)
    with pytest.raises(ValueError, match="'config' parameter of train_teacher"):
        text.train_teacher({}, torch.arange(10), 10)


def test_train_teacher_is_deterministic_and_rounded_to_float16(splits, vocab):
    config = text.TeacherConfig(embedding_dim=4, hidden_size=8, num_layers=2, num_steps=3, batch_size=4, seq_len=16)
    ids = vocab.encode(splits.train[:5000])
    a = text.train_teacher(config, ids, len(vocab))
    b = text.train_teacher(config, ids, len(vocab))
    assert text.state_dict_sha256(a) == text.state_dict_sha256(b)
    for p in a.parameters():
        assert torch.equal(p, p.half().float())


def test_save_and_load_round_trip(tmp_path, vocab):
    config = text.TeacherConfig(embedding_dim=4, hidden_size=8, num_layers=1)
    torch.manual_seed(0)
    model = text.CharGRU(len(vocab), embedding_dim=4, hidden_size=8)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    text.save_teacher(model, vocab, config, tmp_path / "t.pt")
    loaded, vocab2, record = text.load_teacher(tmp_path / "t.pt")
    assert vocab2.chars == vocab.chars and record == {}
    assert text.state_dict_sha256(loaded) == text.state_dict_sha256(model)
    with pytest.raises(ValueError, match="'path' parameter of load_teacher"):
        text.load_teacher(tmp_path / "missing.pt")


def test_shipped_teacher_matches_its_record(splits):
    """The shipped weights are those the script recorded: same configuration, same hash,
    and the held-out bits per character the script measured (the script is deterministic
    under the pinned kernels; retraining takes minutes, so CI checks the record instead)."""
    teacher, vocab, record = text.load_teacher()
    assert record["config"] == json.loads(json.dumps(asdict(text.TeacherConfig())))
    assert record["weights_sha256"] == text.state_dict_sha256(teacher)
    assert record["vocab"] == vocab.chars
    assert vocab.chars == text.CharVocab.from_text(splits.train).chars or record["train_sha256"] != text.text_sha256(
        splits.train
    )
    if record["train_sha256"] == text.text_sha256(splits.train):  # the same Python's help text
        torch.set_num_threads(1)
        bpc = text.bits_per_char(teacher, vocab.encode(splits.val), seq_len=record["eval_seq_len"])
        assert bpc == pytest.approx(record["val_bpc"], abs=1e-3)
    size = text.packaged_teacher_file().stat().st_size
    assert size < 500_000  # the package stays small


def test_benchmark_script_uses_the_package_defaults():
    source = (ROOT / "benchmarks" / "char_teacher.py").read_text(encoding="utf-8")
    assert "TeacherConfig()" in source and "train_teacher" in source
