"""Characters of Python's own help text, and small character-level language models.

The data set of chapter 5's page on distilling a language model: the help
topics that ship with every Python in the standard library's
:mod:`pydoc_data.topics` (what ``help("assert")`` prints; about 465,000
characters in Python 3.11), so nothing is downloaded. Around it:

* :func:`load_help_text` — a fixed train / validation / test split of the text
  (each help topic cut into its first 80 %, next 10 % and last 10 %);
* :class:`CharVocab` — the characters of the training text, text ↔ indices;
* :func:`random_windows`, :func:`text_batches`, :func:`windows` — batches of
  sequences for training and evaluation;
* :class:`CharGRU` — a small recurrent character model;
  :func:`sample` draws text from it;
* :func:`bits_per_char` — the held-out measure of a language model;
* the four ways to train a student: :func:`text_loss` (the text alone),
  :func:`token_kd_loss` (the book's :func:`~kt_helpers.fusion.kd_loss` at every
  position), :func:`sequence_kd_batches` (Kim & Rush, 2016: the teacher's
  samples as data) and :func:`reverse_kl` on the student's own samples
  (:func:`on_policy_loss`, the idea behind MiniLLM and GKD), all trained by one
  loop, :func:`train_language_model`;
* :class:`TeacherConfig`, :func:`train_teacher` and :func:`load_teacher` — the
  teacher that ``benchmarks/char_teacher.py`` trains and the package ships.

Introduced in chapter 5 ("Distilling a language model").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import (
    check_int,
    check_positive,
    check_same_shape,
    check_tensor,
)
from .fusion import kd_loss

__all__ = [
    "CharGRU",
    "CharVocab",
    "TeacherConfig",
    "TextSplits",
    "bits_per_char",
    "load_help_text",
    "load_teacher",
    "on_policy_loss",
    "packaged_teacher_file",
    "random_windows",
    "reverse_kl",
    "sample",
    "save_teacher",
    "sequence_kd_batches",
    "state_dict_sha256",
    "text_batches",
    "text_loss",
    "text_sha256",
    "token_kd_loss",
    "train_language_model",
    "train_teacher",
    "windows",
]

#: Where the shipped teacher lies, relative to the package.
PACKAGED_TEACHER_PATH = "results/char_teacher.pt"
#: Its training record (configuration, hashes, held-out bits per character).
PACKAGED_TEACHER_RECORD = "results/char_teacher.json"


# --- the text ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSplits:
    """The help text, split once and for all into three disjoint parts.

    Attributes:
        train: the text the teacher and the students learn from.
        val: held out, for choosing settings.
        test: held out, for the final measure.
    """

    train: str
    val: str
    test: str

    def __repr__(self) -> str:
        return (
            f"TextSplits(train={len(self.train):,} chars, val={len(self.val):,} chars, "
            f"test={len(self.test):,} chars)"
        )


def load_help_text(fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> TextSplits:
    """Python's help topics (:mod:`pydoc_data.topics`), split into train, validation and test.

    Each topic (``"assert"``, ``"class"``, ...; sorted by name) is cut into
    consecutive pieces: its first ``fractions[0]`` of characters go to the
    training text, the next ``fractions[1]`` to validation, the rest to test.
    The three parts are the pieces joined in topic order. Cutting every topic,
    rather than holding whole topics out, keeps the three parts alike (every
    part has some of every topic) and the split stable when a Python release
    edits a few topics; no character is in two parts.

    The text is that of the running Python: another version ships slightly
    different help topics (:func:`text_sha256` tells them apart).

    Args:
        fractions: three positive fractions summing to 1.

    Returns:
        The :class:`TextSplits`.

    Example:
        >>> splits = load_help_text()
        >>> len(splits.train) > 7 * len(splits.test)
        True
    """
    if (
        not isinstance(fractions, (tuple, list))
        or len(fractions) != 3
        or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in fractions)
        or abs(sum(fractions) - 1.0) > 1e-9
    ):
        raise ValueError(
            "The 'fractions' parameter of load_help_text must be three positive numbers "
            f"summing to 1, such as (0.8, 0.1, 0.1). Got {fractions!r} instead."
        )
    from pydoc_data.topics import topics

    parts: list[list[str]] = [[], [], []]
    for name in sorted(topics):
        topic = topics[name]
        n = len(topic)
        cut1 = round(n * fractions[0])
        cut2 = round(n * (fractions[0] + fractions[1]))
        for part, piece in zip(parts, (topic[:cut1], topic[cut1:cut2], topic[cut2:])):
            part.append(piece)
    train, val, test = ("".join(part) for part in parts)
    return TextSplits(train, val, test)


def text_sha256(text: str) -> str:
    """SHA-256 of a text (UTF-8), to tell whether two Pythons ship the same help text."""
    if not isinstance(text, str):
        raise ValueError(f"The 'text' parameter of text_sha256 must be a str. Got {type(text).__name__} instead.")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CharVocab:
    """The characters a model knows, and the mapping text ↔ indices.

    Index 0 is reserved for characters outside the vocabulary (shown as
    ``UNKNOWN``, "�"); the known characters follow, in the order given.

    Args:
        chars: the distinct characters of the vocabulary (a string), e.g.
            ``CharVocab.from_text(splits.train).chars``.

    Example:
        >>> vocab = CharVocab.from_text("hello")
        >>> vocab.chars, len(vocab)
        ('ehlo', 5)
        >>> vocab.encode("hole!").tolist()
        [2, 4, 3, 1, 0]
        >>> vocab.decode(vocab.encode("hole!"))
        'hole�'
    """

    #: How an unknown character decodes.
    UNKNOWN = "\ufffd"

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars) or self.UNKNOWN in chars:
            raise ValueError(
                "The 'chars' parameter of CharVocab must be a non-empty string of distinct characters "
                f"(without {self.UNKNOWN!r}). Got {chars!r:.80} instead."
            )
        self.chars = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of the distinct characters of ``text``, sorted."""
        if not isinstance(text, str) or not text:
            raise ValueError(
                f"The 'text' parameter of CharVocab.from_text must be a non-empty str. Got {text!r:.80} instead."
            )
        return cls("".join(sorted(set(text) - {cls.UNKNOWN})))

    def __len__(self) -> int:
        """The number of indices: the known characters plus the unknown one."""
        return len(self.chars) + 1

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} symbols)"

    def encode(self, text: str) -> Tensor:
        """Indices of the characters of ``text``, a tensor of shape (len(text),) (int64)."""
        if not isinstance(text, str):
            raise ValueError(
                f"The 'text' parameter of CharVocab.encode must be a str. Got {type(text).__name__} instead."
            )
        return torch.tensor([self._index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        """The text of a 1-D tensor (or list) of indices."""
        if isinstance(ids, Tensor):
            if ids.ndim != 1:
                raise ValueError(
                    "The 'ids' parameter of CharVocab.decode must have 1 dimension. "
                    f"Got shape {tuple(ids.shape)} instead."
                )
            ids = ids.tolist()
        if not all(isinstance(i, int) and 0 <= i < len(self) for i in ids):
            raise ValueError(
                f"The 'ids' parameter of CharVocab.decode must hold indices in [0, {len(self)}). "
                f"Got {list(ids)[:10]!r} instead."
            )
        return "".join(self.chars[i - 1] if i else self.UNKNOWN for i in ids)


# --- batches -----------------------------------------------------------------------------------


def _check_ids(ids: Tensor, func: str, name: str = "ids", *, ndim: int = 1) -> Tensor:
    check_tensor(ids, func, name, ndim=ndim)
    if ids.dtype != torch.long:
        raise ValueError(
            f"The '{name}' parameter of {func} must hold int64 character indices. Got dtype {ids.dtype} instead."
        )
    return ids


def random_windows(ids: Tensor, *, seq_len: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """A batch of windows of ``seq_len + 1`` consecutive characters, at random places.

    A window's first ``seq_len`` characters are the model's input, its last
    ``seq_len`` the targets (the input shifted by one).

    Args:
        ids: the encoded text, of shape (N,).
        seq_len: L, the characters a model reads per window.
        batch_size: B, the windows per batch.
        generator: the random stream that picks the windows.

    Shape:
        - ``ids``: (N,), with N > L.
        - Output: (B, L + 1).
    """
    _check_ids(ids, "random_windows")
    check_int(seq_len, "random_windows", "seq_len")
    check_int(batch_size, "random_windows", "batch_size")
    if len(ids) <= seq_len:
        raise ValueError(
            f"The 'ids' parameter of random_windows must be longer than seq_len + 1 = {seq_len + 1} "
            f"characters. Got {len(ids)} instead."
        )
    starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(seq_len + 1)  # (L + 1,)
    return ids[starts[:, None] + offsets]  # (B, L + 1)


def text_batches(ids: Tensor, *, num_steps: int, seq_len: int, batch_size: int, seed: int) -> Tensor:
    """Every batch of a training run, drawn in advance: ``num_steps`` calls of :func:`random_windows`.

    Drawing them first makes "the same batches for every method" a tensor that
    every method receives, rather than a promise about random streams.

    Shape:
        Output: (num_steps, B, L + 1).
    """
    check_int(num_steps, "text_batches", "num_steps")
    check_int(seed, "text_batches", "seed", minimum=0)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [random_windows(ids, seq_len=seq_len, batch_size=batch_size, generator=generator) for _ in range(num_steps)]
    )  # (S, B, L + 1)


def windows(ids: Tensor, seq_len: int) -> Tensor:
    """The text cut into consecutive windows of ``seq_len + 1`` characters, overlapping by one.

    Every character but the first is a target of exactly one window (a
    trailing piece shorter than a window is dropped), which is how
    :func:`bits_per_char` scores a held-out text.

    Shape:
        - ``ids``: (N,).
        - Output: ((N - 1) // L, L + 1).

    Example:
        >>> windows(torch.arange(7), 3).tolist()
        [[0, 1, 2, 3], [3, 4, 5, 6]]
    """
    _check_ids(ids, "windows")
    check_int(seq_len, "windows", "seq_len")
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise ValueError(
            f"The 'ids' parameter of windows must hold at least seq_len + 1 = {seq_len + 1} characters. "
            f"Got {len(ids)} instead."
        )
    return ids[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)  # (n, L + 1)


# --- the model ---------------------------------------------------------------------------------


class CharGRU(nn.Module):
    """A character-level language model: embedding, GRU layers, a linear head.

    It reads characters left to right and gives, at every position, the
    logits of the next character.

    Args:
        vocab_size: V, the number of symbols (``len(vocab)``).
        embedding_dim: width of the character embedding.
        hidden_size: H, width of each GRU layer.
        num_layers: number of stacked GRU layers.

    Shape:
        - Input: (B, L) character indices, and optionally the state of a
          previous call, (num_layers, B, H).
        - Output: ``(logits, state)``, of shapes (B, L, V) and (num_layers, B, H).

    Example:
        >>> model = CharGRU(10, embedding_dim=4, hidden_size=8)
        >>> logits, state = model(torch.zeros(2, 5, dtype=torch.long))
        >>> tuple(logits.shape), tuple(state.shape)
        ((2, 5, 10), (1, 2, 8))
    """

    def __init__(self, vocab_size: int, *, embedding_dim: int = 32, hidden_size: int = 128, num_layers: int = 1) -> None:
        super().__init__()
        check_int(vocab_size, "CharGRU", "vocab_size", minimum=2)
        check_int(embedding_dim, "CharGRU", "embedding_dim")
        check_int(hidden_size, "CharGRU", "hidden_size")
        check_int(num_layers, "CharGRU", "num_layers")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        _check_ids(ids, "CharGRU.forward", ndim=2)
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"The 'ids' parameter of CharGRU.forward must hold indices below vocab_size = "
                f"{self.vocab_size}. Got {int(ids.max())} instead."
            )
        hidden, state = self.gru(self.embedding(ids), state)  # (B, L, H), (layers, B, H)
        return self.head(hidden), state  # (B, L, V)


@torch.no_grad()
def sample(
    model: CharGRU,
    prompt: Tensor,
    num_chars: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue each prompt by ``num_chars`` characters drawn from the model.

    Each character is drawn from :math:`\\mathrm{softmax}(z / T)` of the
    model's logits z given everything before it (``temperature`` τ = 1 samples
    the model's own distribution; T < 1 sharpens it towards its most likely
    characters). Each draw takes one uniform number u per row and returns
    the first character whose cumulative probability exceeds u. No gradient
    is recorded.

    Args:
        model: the language model (put in evaluation mode while sampling, and
            back in the mode it was in afterwards).
        prompt: the prompts' character indices, at least one per row.
        num_chars: how many characters to add.
        temperature: τ > 0.
        generator: the random stream of the draws.

    Shape:
        - ``prompt``: (B, P), P >= 1.
        - Output: (B, P + num_chars), the prompts followed by their continuations.
    """
    _check_ids(prompt, "sample", "prompt", ndim=2)
    if prompt.shape[1] < 1:
        raise ValueError("The 'prompt' parameter of sample must hold at least one character per row. Got 0 instead.")
    check_int(num_chars, "sample", "num_chars", minimum=0)
    temperature = check_positive(temperature, "sample", "temperature")
    was_training = model.training
    model.eval()
    try:
        logits, state = model(prompt)  # (B, P, V)
        drawn = []
        for _ in range(num_chars):
            probs = F.softmax(logits[:, -1] / temperature, dim=-1)  # (B, V)
            # inverse-CDF draw, one uniform number per row (faster than torch.multinomial)
            u = torch.rand(len(probs), 1, generator=generator)  # (B, 1)
            nxt = (probs.cumsum(dim=-1) < u).sum(dim=-1, keepdim=True).clamp_(max=probs.shape[1] - 1)  # (B, 1)
            drawn.append(nxt)
            logits, state = model(nxt, state)  # (B, 1, V)
    finally:
        model.train(was_training)
    return torch.cat([prompt, *drawn], dim=1)  # (B, P + num_chars)


# --- the measure -------------------------------------------------------------------------------


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: Tensor, *, seq_len: int = 128, skip: int = 0, batch_size: int = 256) -> float:
    """The model's cross-entropy on a text, in bits per character.

    .. math::
        \\mathrm{bpc} = -\\frac{1}{n \\ln 2} \\sum_{t} \\ln q(x_t \\mid x_{<t})

    over the n scored characters: lower is better; a model that knows only how
    often each character occurs scores the text's unigram entropy, a perfect
    model 0. A 1-D text is cut into :func:`windows` of ``seq_len + 1``
    characters, each read from its start (so a window's first characters are
    predicted with little context, as in training); a 2-D tensor is taken as
    windows already (e.g. sampled sequences).

    Args:
        model: returns ``(logits, state)`` for (B, L) indices, as :class:`CharGRU`.
        ids: the encoded text (N,), or windows (n, L + 1).
        seq_len: L, for a 1-D text.
        skip: the first ``skip`` targets of every window are not scored
            (a prompt the model was given rather than wrote).
        batch_size: windows per forward pass (memory only).

    Returns:
        Bits per character, a float.
    """
    check_tensor(ids, "bits_per_char", "ids")
    if ids.ndim == 1:
        ids = windows(_check_ids(ids, "bits_per_char"), seq_len)  # (n, L + 1)
    else:
        _check_ids(ids, "bits_per_char", ndim=2)
    check_int(skip, "bits_per_char", "skip", minimum=0)
    if skip >= ids.shape[1] - 1:
        raise ValueError(
            f"The 'skip' parameter of bits_per_char must be below the {ids.shape[1] - 1} targets of a "
            f"window. Got {skip} instead."
        )
    check_int(batch_size, "bits_per_char", "batch_size")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for chunk in ids.split(batch_size):
            logits, _ = model(chunk[:, :-1])  # (b, L, V)
            nll = F.cross_entropy(logits[:, skip:].transpose(1, 2), chunk[:, 1 + skip :], reduction="sum")
            total += float(nll)
            count += chunk[:, 1 + skip :].numel()
    finally:
        model.train(was_training)
    return total / count / math.log(2)


# --- the four objectives -----------------------------------------------------------------------


def text_loss(model: nn.Module, batch: Tensor, *, skip: int = 0) -> Tensor:
    """Cross-entropy of the next character: learning from the text alone (or from any sequences).

    Args:
        model: the student.
        batch: windows of shape (B, L + 1): inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``.
        skip: leave the first ``skip`` targets out (a prompt).

    Returns:
        The mean over the B·(L − skip) scored positions, a scalar.
    """
    _check_ids(batch, "text_loss", "batch", ndim=2)
    logits, _ = model(batch[:, :-1])  # (B, L, V)
    return F.cross_entropy(logits[:, skip:].transpose(1, 2), batch[:, 1 + skip :])


def token_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, alpha: float = 0.0, temperature: float = 1.0
) -> Tensor:
    """Token-level distillation: the book's :func:`~kt_helpers.fusion.kd_loss` at every position.

    Each of the B·L positions is one "sample" whose classes are the next
    character, so the (B, L, V) logits are reshaped to (B·L, V) and passed to
    :func:`~kt_helpers.fusion.kd_loss` unchanged. With the defaults α = 0 and
    τ = 1 it is the forward KL, averaged over positions,

    .. math::
        \\frac{1}{BL} \\sum_{b,t} \\mathrm{KL}\\bigl(p(\\cdot \\mid x_{<t}) \\,\\Vert\\, q(\\cdot \\mid x_{<t})\\bigr),

    which pushes the student q to put mass wherever the teacher p does
    (Hinton et al., 2015; for language models, Kim & Rush, 2016, "word-level"
    distillation, and DistilBERT's soft-target loss).

    Shape:
        - ``student_logits``, ``teacher_logits``: (B, L, V).
        - ``targets``: (B, L), the text's next characters (used when α > 0).
    """
    check_tensor(student_logits, "token_kd_loss", "student_logits", ndim=3)
    check_same_shape(student_logits, teacher_logits, "token_kd_loss", ("student_logits", "teacher_logits"))
    B, L, V = student_logits.shape
    if tuple(targets.shape) != (B, L):
        raise ValueError(
            f"The 'targets' parameter of token_kd_loss must have shape (B, L) = {(B, L)}. "
            f"Got {tuple(targets.shape)} instead."
        )
    return kd_loss(
        student_logits.reshape(B * L, V),  # (B·L, V)
        teacher_logits.reshape(B * L, V),  # (B·L, V)
        targets.reshape(B * L),  # (B·L,)
        alpha=alpha,
        temperature=temperature,
    )


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """The reverse KL divergence KL(q ‖ p) of the student q from the teacher p, averaged over rows.

    .. math::
        \\frac{1}{N} \\sum_n \\sum_v q_n(v) \\bigl(\\ln q_n(v) - \\ln p_n(v)\\bigr),
        \\quad q_n = \\mathrm{softmax}(z^s_n),\\ p_n = \\mathrm{softmax}(z^t_n)

    The forward KL(p ‖ q) of :func:`~kt_helpers.fusion.kd_loss` punishes a
    student that misses any of the teacher's mass (it spreads out, "mode
    covering"); the reverse KL punishes a student that puts mass where the
    teacher has little (it concentrates, "mode seeking"). MiniLLM (Gu et al.,
    2024) minimises the reverse KL at the sequence level; GKD (Agarwal et al.,
    2024) computes it, among other divergences, token by token on sequences
    the student generates itself — what :func:`on_policy_loss` does.

    No gradient reaches ``teacher_logits``.

    Args:
        student_logits: of shape (N, C), or (B, L, V), flattened to (B·L, V).
        teacher_logits: the same shape.

    Returns:
        A scalar tensor, >= 0, and 0 exactly when the two distributions agree.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 0.5]])
        >>> float(reverse_kl(z, z))
        0.0
    """
    check_tensor(student_logits, "reverse_kl", "student_logits")
    check_tensor(teacher_logits, "reverse_kl", "teacher_logits")
    check_same_shape(student_logits, teacher_logits, "reverse_kl", ("student_logits", "teacher_logits"))
    if student_logits.ndim < 2:
        raise ValueError(
            "The 'student_logits' parameter of reverse_kl must have at least 2 dimensions (rows, classes). "
            f"Got shape {tuple(student_logits.shape)} instead."
        )
    V = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.reshape(-1, V), dim=-1)  # (N, V)
    log_p = F.log_softmax(teacher_logits.detach().reshape(-1, V), dim=-1)  # (N, V)
    return (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean()


def sequence_kd_batches(
    teacher: CharGRU,
    batches: Tensor,
    *,
    prompt_len: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
) -> Tensor:
    """Sequence-level distillation's data: each window's prompt, continued by the teacher.

    Kim & Rush (2016) train the student on the teacher's *outputs* rather than
    on the references: the student imitates whole sequences the teacher
    generates (they take the teacher's beam-search output, an approximation of
    its most likely sequence; here the teacher samples). Every window of
    ``batches`` keeps its first ``prompt_len`` characters of real text; the
    rest is replaced by the teacher's continuation. Train the student on the
    result with :func:`text_loss` and ``skip=prompt_len - 1`` so that only the
    teacher's characters are targets.

    Shape:
        - ``batches``: (S, B, L + 1), e.g. from :func:`text_batches`.
        - Output: (S, B, L + 1).
    """
    _check_ids(batches, "sequence_kd_batches", "batches", ndim=3)
    S, B, L1 = batches.shape
    check_int(prompt_len, "sequence_kd_batches", "prompt_len")
    if prompt_len >= L1:
        raise ValueError(
            f"The 'prompt_len' parameter of sequence_kd_batches must be below the window length {L1}. "
            f"Got {prompt_len} instead."
        )
    check_int(chunk_size, "sequence_kd_batches", "chunk_size")
    prompts = batches[..., :prompt_len].reshape(S * B, prompt_len)  # (S·B, P)
    out = [
        sample(teacher, chunk, L1 - prompt_len, temperature=temperature, generator=generator)
        for chunk in prompts.split(chunk_size)
    ]
    return torch.cat(out).reshape(S, B, L1)  # (S, B, L + 1)


def on_policy_loss(
    student: CharGRU,
    teacher: CharGRU,
    batch: Tensor,
    *,
    prompt_len: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """On-policy distillation: the reverse KL on sequences the student writes itself.

    The student continues each window's prompt (its first ``prompt_len``
    characters of real text) by sampling from its current self; on every
    position of its continuation the teacher says what it would have predicted,
    and the student minimises :func:`reverse_kl` to the teacher there. The
    student is thus trained on the prefixes it will meet when it generates, not
    on the text's — the "exposure bias" that GKD (Agarwal et al., 2024) and
    MiniLLM (Gu et al., 2024) remove. As in GKD, no gradient flows through
    the sampling.

    Shape:
        ``batch``: (B, L + 1) windows of the text (only their prompts are used).

    Returns:
        The mean reverse KL over the B·(L + 1 − prompt_len) generated positions.
    """
    _check_ids(batch, "on_policy_loss", "batch", ndim=2)
    check_int(prompt_len, "on_policy_loss", "prompt_len")
    B, L1 = batch.shape
    if prompt_len >= L1:
        raise ValueError(
            f"The 'prompt_len' parameter of on_policy_loss must be below the window length {L1}. "
            f"Got {prompt_len} instead."
        )
    seqs = sample(student, batch[:, :prompt_len], L1 - prompt_len, generator=generator)  # (B, L + 1)
    student_logits, _ = student(seqs[:, :-1])  # (B, L, V)
    with torch.no_grad():
        teacher_logits, _ = teacher(seqs[:, :-1])  # (B, L, V)
    start = prompt_len - 1  # logits at position t predict character t + 1
    return reverse_kl(student_logits[:, start:], teacher_logits[:, start:])


def train_language_model(
    model: nn.Module,
    batches: Tensor,
    objective: Callable[[nn.Module, Tensor], Tensor] | None = None,
    *,
    lr: float = 1e-2,
    clip: float = 1.0,
    schedule: str = "cosine",
) -> list[float]:
    """Train a language model on a fixed sequence of batches, one Adam step per batch.

    The book's :func:`~kt_helpers.train.fit` trains on a fixed set of labelled
    samples, epoch after epoch; a language model instead reads windows drawn
    at random from a stream of text (or generated), so this loop takes the
    batches themselves, all drawn in advance (:func:`text_batches`), and an
    objective ``objective(model, batch) -> loss`` (default :func:`text_loss`).
    Same batches, same initial weights and the same learning-rate schedule make
    two objectives comparable.

    Args:
        model: trained in place.
        batches: of shape (S, B, L + 1): S steps.
        objective: the loss of one batch.
        lr: Adam's learning rate.
        clip: the gradient norm is clipped to this (recurrent networks need it).
        schedule: ``"cosine"`` (annealed to 0 over the S steps) or ``"constant"``.

    Returns:
        The loss of every step.
    """
    _check_ids(batches, "train_language_model", "batches", ndim=3)
    lr = check_positive(lr, "train_language_model", "lr")
    clip = check_positive(clip, "train_language_model", "clip")
    if schedule not in ("cosine", "constant"):
        raise ValueError(
            "The 'schedule' parameter of train_language_model must be one of 'cosine', 'constant'. "
            f"Got {schedule!r} instead."
        )
    objective = text_loss if objective is None else objective
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(batches)) if schedule == "cosine" else None
    )
    model.train()
    losses = []
    for batch in batches:  # (B, L + 1)
        loss = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


# --- the teacher -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherConfig:
    """How ``benchmarks/char_teacher.py`` trains the teacher (the shipped one has these defaults)."""

    embedding_dim: int = 32  # width of the character embedding
    hidden_size: int = 128  # width of each GRU layer
    num_layers: int = 2  # stacked GRU layers
    num_steps: int = 800  # Adam steps
    batch_size: int = 64  # windows per step
    seq_len: int = 128  # characters per window
    lr: float = 5e-3  # peak learning rate, cosine-annealed to 0
    seed: int = 0  # initial weights and the windows drawn

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "hidden_size", "num_layers", "num_steps", "batch_size", "seq_len"):
            check_int(getattr(self, name), "TeacherConfig", name)
        check_int(self.seed, "TeacherConfig", "seed", minimum=0)
        check_positive(self.lr, "TeacherConfig", "lr")


def train_teacher(config: TeacherConfig, train_ids: Tensor, vocab_size: int) -> CharGRU:
    """Train a teacher on the training text alone, deterministically for a given thread count.

    Seeds PyTorch with ``config.seed`` before creating the model; the windows
    come from :func:`text_batches` with the same seed. The weights are then
    rounded to float16 and back, as they are shipped, so that the returned
    model is the shipped teacher exactly.
    """
    if not isinstance(config, TeacherConfig):
        raise ValueError(
            f"The 'config' parameter of train_teacher must be a TeacherConfig. Got {type(config).__name__} instead."
        )
    torch.manual_seed(config.seed)
    teacher = CharGRU(
        vocab_size, embedding_dim=config.embedding_dim, hidden_size=config.hidden_size, num_layers=config.num_layers
    )
    batches = text_batches(
        train_ids, num_steps=config.num_steps, seq_len=config.seq_len, batch_size=config.batch_size, seed=config.seed
    )
    train_language_model(teacher, batches, lr=config.lr)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(p.half().float())
    return teacher.eval()


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's weights (names, shapes, dtypes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        value = value.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def packaged_teacher_file() -> Path:
    """Where the package's copy of the teacher lies."""
    return Path(__file__).resolve().parent / PACKAGED_TEACHER_PATH


def save_teacher(teacher: CharGRU, vocab: CharVocab, config: TeacherConfig, path: Path) -> None:
    """Store the teacher's float16 weights, its vocabulary and configuration (``torch.save``)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in teacher.state_dict().items()}
    torch.save({"state_dict": state, "chars": vocab.chars, "config": asdict(config)}, path)


def load_teacher(path: str | Path | None = None) -> tuple[CharGRU, CharVocab, dict]:
    """The teacher that ``benchmarks/char_teacher.py`` trained, with its vocabulary and record.

    Args:
        path: the ``.pt`` file; by default the one shipped with the package
            (:func:`packaged_teacher_file`), whose record
            (``char_teacher.json``, next to it) is returned too.

    Returns:
        ``(teacher, vocab, record)``: the model in evaluation mode (float32),
        the vocabulary it was trained with and the training record (an empty
        dict if there is none next to the weights).
    """
    path = packaged_teacher_file() if path is None else Path(path)
    if not path.is_file():
        raise ValueError(
            f"The 'path' parameter of load_teacher must name the teacher's weights. No file at {path}; "
            "run `python benchmarks/char_teacher.py` to train them."
        )
    stored = torch.load(path, map_location="cpu", weights_only=True)
    config = TeacherConfig(**stored["config"])
    vocab = CharVocab(stored["chars"])
    teacher = CharGRU(
        len(vocab), embedding_dim=config.embedding_dim, hidden_size=config.hidden_size, num_layers=config.num_layers
    )
    teacher.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored["state_dict"].items()})
    record_file = path.with_suffix(".json")
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    return teacher.eval(), vocab, record
