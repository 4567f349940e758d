"""Step 3 of 4 — knowledge mapping: carry knowledge from the source's space into the target's.

The source document writes the mapping as K_t = T(K_s) and says T is "usually a
linear transform". Three concrete mappings, one per kind of knowledge:

* features — :class:`LinearMap`, a least-squares (or ridge) linear map between
  two models' feature spaces, fitted in closed form (chapters 2–4), and its
  per-step version :func:`fit_step_map`, one map shared by the RNN's states
  after each row band and the matching bands of the CNN's feature map
  (:func:`step_states`, :func:`row_bands`, :func:`step_scores`; chapter 4);
* weights of two networks of the same shape — :func:`match_weights`, the
  permutation of hidden units that best aligns one network with another
  (weight matching, Ainsworth et al., 2023), applied by :func:`permute_hidden`
  (chapters 3 and 5);
* weights into a *wider* network — :func:`net2wider`, a function-preserving
  widening (Net2Net, Chen et al., 2016) (chapter 5).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ._validation import check_int, check_non_negative, check_same_rows, check_tensor
from .metrics import _r2

__all__ = [
    "STEP_ROWS",
    "LinearMap",
    "fit_step_map",
    "match_weights",
    "net2wider",
    "permute_hidden",
    "row_bands",
    "step_scores",
    "step_states",
]


class LinearMap:
    """A linear map ``T(x) = x W^T + b`` between two feature spaces, fitted in closed form.

    Given source features ``S`` (N, p) and target features ``K`` (N, d) of the
    same N samples, ``fit`` solves the (ridge) least-squares problem

    .. math::
        \\min_{W, b} \\; \\lVert S W^\\top + \\mathbf{1} b^\\top - K \\rVert_F^2
        + \\lambda \\lVert W \\rVert_F^2

    whose solution, with centred ``S_c`` and ``K_c``, is
    :math:`W^\\top = (S_c^\\top S_c + \\lambda I)^{-1} S_c^\\top K_c` and
    :math:`b = \\bar k - W \\bar s`. With ``ridge=0`` it is the minimum-norm
    least-squares solution (via :func:`torch.linalg.lstsq`). Derived in chapter 3.

    It follows scikit-learn's estimator contract: ``__init__`` stores
    hyperparameters only, ``fit`` learns ``weight_`` and ``bias_`` and returns
    ``self``, then ``transform`` and ``score``.

    Args:
        ridge: the L2 penalty λ ≥ 0 on ``W`` (the intercept is not penalised).
        fit_intercept: learn the bias ``b``; if False, ``b = 0``.

    Attributes:
        weight_: of shape (d, p), as in :class:`torch.nn.Linear`.
        bias_: of shape (d,).

    Example:
        >>> S = torch.randn(50, 3)
        >>> K = S @ torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]]).T + 0.5
        >>> T = LinearMap().fit(S, K)
        >>> round(T.score(S, K), 4)
        1.0
    """

    def __init__(self, *, ridge: float = 0.0, fit_intercept: bool = True) -> None:
        self.ridge = ridge
        self.fit_intercept = fit_intercept

    def __repr__(self) -> str:
        return f"LinearMap(ridge={self.ridge!r}, fit_intercept={self.fit_intercept!r})"

    def _check_input(self, source: Tensor, target: Tensor | None, method: str) -> None:
        func = f"LinearMap.{method}"
        check_tensor(source, func, "source", ndim=2)
        if target is not None:
            check_tensor(target, func, "target", ndim=2)
            check_same_rows(source, target, func, ("source", "target"))

    def fit(self, source: Tensor, target: Tensor) -> "LinearMap":
        """Fit ``W`` and ``b`` from paired features.

        Args:
            source: source features of shape (N, p).
            target: target features of shape (N, d), the same samples in the same order.

        Returns:
            ``self``, fitted.
        """
        self._check_input(source, target, "fit")
        check_non_negative(self.ridge, "LinearMap", "ridge")
        S = source.detach().double().cpu()  # (N, p)
        K = target.detach().double().cpu()  # (N, d)
        if self.fit_intercept:
            s_mean, k_mean = S.mean(dim=0), K.mean(dim=0)  # (p,), (d,)
        else:
            s_mean = torch.zeros(S.shape[1], dtype=S.dtype)
            k_mean = torch.zeros(K.shape[1], dtype=K.dtype)
        S_c, K_c = S - s_mean, K - k_mean
        if self.ridge > 0:
            gram = S_c.T @ S_c + self.ridge * torch.eye(S.shape[1], dtype=S.dtype)  # (p, p)
            W_t = torch.linalg.solve(gram, S_c.T @ K_c)  # (p, d)
        else:
            W_t = torch.linalg.lstsq(S_c, K_c, driver="gelsd").solution  # (p, d)
        self.weight_ = W_t.T.to(source.dtype)  # (d, p)
        self.bias_ = (k_mean - s_mean @ W_t).to(source.dtype)  # (d,)
        self.n_features_in_ = S.shape[1]
        return self

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "weight_"):
            raise ValueError(
                f"This LinearMap is not fitted yet: call 'fit' before '{method}'."
            )

    def transform(self, source: Tensor) -> Tensor:
        """Map source features: ``source @ weight_.T + bias_``.

        Shape:
            - source: (N, p). Output: (N, d).
        """
        self._check_fitted("transform")
        self._check_input(source, None, "transform")
        if source.shape[1] != self.n_features_in_:
            raise ValueError(
                f"The 'source' parameter of LinearMap.transform must have {self.n_features_in_} "
                f"columns, as in fit. Got {source.shape[1]} instead."
            )
        return source @ self.weight_.to(source).T + self.bias_.to(source)

    def score(self, source: Tensor, target: Tensor) -> float:
        """Coefficient of determination R² of the mapped source against the target.

        Variance-weighted over the d target dimensions (so a constant, "dead"
        feature neither helps nor breaks the score):

        .. math::
            R^2 = 1 - \\frac{\\sum_{n,j} (K_{nj} - \\hat K_{nj})^2}{\\sum_{n,j} (K_{nj} - \\bar K_j)^2}

        1 is a perfect map, 0 is no better than predicting the mean, and it can
        be negative on held-out data.
        """
        self._check_fitted("score")
        self._check_input(source, target, "score")
        if target.shape[1] != self.weight_.shape[0]:
            raise ValueError(
                f"The 'target' parameter of LinearMap.score must have {self.weight_.shape[0]} "
                f"columns, as in fit. Got {target.shape[1]} instead."
            )
        return _r2(self.transform(source), target, "LinearMap.score")

    def to_module(self) -> nn.Linear:
        """The fitted map as a :class:`torch.nn.Linear`, e.g. to initialise a learned map."""
        self._check_fitted("to_module")
        d, p = self.weight_.shape
        layer = nn.Linear(p, d)
        with torch.no_grad():
            layer.weight.copy_(self.weight_)
            layer.bias.copy_(self.bias_)
        return layer


# --- features, step by step: the RNN's state after each row band → the CNN's feature map -------

#: The rows after which the RNN's state is read: after rows 2, 4, 6 and 8 it has
#: read row bands 1–4, the rows of which the CNN's pooled feature map (4 × 4) keeps one row each.
STEP_ROWS = (2, 4, 6, 8)


def row_bands(feature_map: Tensor, num_bands: int = 4) -> Tensor:
    """Cut a feature map into horizontal bands, one feature vector per band.

    Band k holds rows ``k·H/B … (k+1)·H/B − 1`` of every channel, flattened in
    (channel, row, column) order. For the CNN's pooled map (N, 32, 4, 4) the
    four bands are its four rows (32 channels × 4 columns = 128 features each),
    and for the images (N, 1, 8, 8) they are pairs of pixel rows (16 pixels
    each): band k covers image rows 2k and 2k + 1, the rows the RNN has read
    after step 2(k + 1) (chapter 4, notebook 4).

    Args:
        feature_map: of shape (N, C, H, W), with H divisible by ``num_bands``.
        num_bands: B, the number of bands.

    Shape:
        - feature_map: (N, C, H, W). Output: (N, B, C · H/B · W).

    Example:
        >>> X = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> row_bands(X, 2)
        tensor([[[ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.],
                 [ 8.,  9., 10., 11., 12., 13., 14., 15.]]])
    """
    check_tensor(feature_map, "row_bands", "feature_map", ndim=4)
    num_bands = check_int(num_bands, "row_bands", "num_bands")
    N, C, H, W = feature_map.shape
    if H % num_bands:
        raise ValueError(
            f"The 'num_bands' parameter of row_bands must divide the feature map's height {H}. "
            f"Got {num_bands} instead."
        )
    bands = feature_map.reshape(N, C, num_bands, H // num_bands, W)  # (N, C, B, H/B, W)
    return bands.permute(0, 2, 1, 3, 4).reshape(N, num_bands, -1)  # (N, B, C·H/B·W)


def step_states(model: nn.Module, X: Tensor, rows: Sequence[int] = STEP_ROWS) -> Tensor:
    """The RNN's hidden state after each of ``rows`` rows, as (N, S, hidden) — no gradient.

    Args:
        model: a :class:`~kt_helpers.models.RowRNN` (anything with ``states(X)`` of shape (N, L, h)).
        X: images of shape (N, 1, 8, 8).
        rows: the row counts after which to read the state, each in 1 … L.

    Shape:
        - X: (N, 1, 8, 8). Output: (N, S, hidden) with S = len(rows).
    """
    check_tensor(X, "step_states", "X")
    if not hasattr(model, "states"):
        raise ValueError(
            "The 'model' parameter of step_states must have a 'states' method (a RowRNN). "
            f"Got {type(model).__name__} instead."
        )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        states = model.states(X)  # (N, L, h)
    model.train(was_training)
    L = states.shape[1]
    if not rows or any(not isinstance(r, int) or not 1 <= r <= L for r in rows):
        raise ValueError(f"The 'rows' parameter of step_states must hold row counts in 1..{L}. Got {rows!r} instead.")
    return states[:, [r - 1 for r in rows]].detach().cpu()  # (N, S, h)


def _check_steps(states: Tensor, bands: Tensor, func: str) -> None:
    check_tensor(states, func, "states", ndim=3)
    check_tensor(bands, func, "bands", ndim=3)
    if states.shape[:2] != bands.shape[:2]:
        raise ValueError(
            f"The 'states' and 'bands' parameters of {func} must have the same samples and steps "
            f"(N, S). Got {tuple(states.shape[:2])} and {tuple(bands.shape[:2])} instead."
        )


def fit_step_map(states: Tensor, bands: Tensor, *, ridge: float = 1e-3) -> LinearMap:
    """One linear map, shared by every step, from the RNN's states to the CNN's row bands.

    The pairs of all S steps are stacked, and one :class:`LinearMap` is fitted
    to them by (ridge) least squares:

    .. math::
        \\min_{W, b} \\sum_{\\ell=1}^{S} \\sum_{n} \\lVert W h_{n,\\ell} + b - k_{n,\\ell} \\rVert^2
        + \\lambda \\lVert W \\rVert_F^2

    with :math:`h_{n,\\ell}` the state after step ℓ and :math:`k_{n,\\ell}` band ℓ
    of the CNN's feature map for image n (the map's input and target: rows of
    S and K in chapter 1's notation). Sharing W across the steps is the
    sequence version of a 1 × 1 convolution: the same map at every position, as
    the source document's case study proposes (chapter 4, notebook 4).

    Args:
        states: of shape (N, S, p), e.g. :func:`step_states`.
        bands: of shape (N, S, d), e.g. :func:`row_bands` of the pooled map.
        ridge: λ ≥ 0.

    Returns:
        The fitted :class:`LinearMap` (p → d); apply it to ``states[:, l]``.

    Example:
        >>> h = torch.randn(40, 4, 3)
        >>> t = h @ torch.randn(3, 5) + 1.0
        >>> [round(r["r2"], 4) for r in step_scores(fit_step_map(h, t, ridge=0.0), h, t)]
        [1.0, 1.0, 1.0, 1.0]
    """
    _check_steps(states, bands, "fit_step_map")
    N, S, p = states.shape
    return LinearMap(ridge=ridge).fit(states.reshape(N * S, p), bands.reshape(N * S, -1))


def step_scores(T: LinearMap, states: Tensor, bands: Tensor, rows: Sequence[int] = STEP_ROWS) -> list[dict]:
    """Per step: linear CKA of the state with its band, and R² of the shared map's prediction.

    CKA needs no map (:func:`~kt_helpers.metrics.linear_cka`); R² is that of
    ``T`` on this step's pairs, :func:`~kt_helpers.metrics.r2_score`, with
    this step's own mean as the baseline.

    Args:
        T: a map fitted by :func:`fit_step_map`.
        states, bands: of shape (N, S, p) and (N, S, d), e.g. on held-out images.
        rows: the label of each step (the rows read), for the output.

    Returns:
        One dict per step: ``{"rows": r, "cka": ..., "r2": ...}``.
    """
    from .metrics import linear_cka

    _check_steps(states, bands, "step_scores")
    if len(rows) != states.shape[1]:
        raise ValueError(
            f"The 'rows' parameter of step_scores must name the {states.shape[1]} steps. Got {rows!r} instead."
        )
    return [{"rows": r, "cka": linear_cka(states[:, k], bands[:, k]),
             "r2": _r2(T.transform(states[:, k]), bands[:, k], "step_scores")}
            for k, r in enumerate(rows)]


# --- weights: permutation alignment and widening ---------------------------------------------

_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Identity,
    nn.Dropout,
)


def _linear_positions(model: nn.Module, func: str, name: str) -> list[int]:
    """Positions of the Linear layers of an MLP, after checking that it is one."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"The '{name}' parameter of {func} must be an MLP: an nn.Sequential of Linear and "
            f"activation layers. Got {type(model).__name__} instead."
        )
    positions: list[int] = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            positions.append(i)
        elif isinstance(layer, nn.Flatten) and not positions:
            continue
        elif not isinstance(layer, _ELEMENTWISE):
            raise ValueError(
                f"The '{name}' parameter of {func} must be an MLP: an nn.Sequential of Linear and "
                f"element-wise activation layers (a Flatten may come first). "
                f"Got {type(layer).__name__} at position {i} instead."
            )
    if len(positions) < 2:
        raise ValueError(
            f"The '{name}' parameter of {func} must have at least one hidden layer "
            f"(two Linear layers). Got {len(positions)} Linear layer(s) instead."
        )
    return positions


def permute_hidden(model: nn.Sequential, perms: Sequence[Sequence[int] | Tensor]) -> nn.Sequential:
    """Return a copy of an MLP with the units of each hidden layer reordered.

    Unit ``i`` of hidden layer ``l`` in the copy is unit ``perms[l][i]`` of the
    original; the rows of that layer's weight and bias and the columns of the
    next layer's weight move together, so the copy computes exactly the same
    function. This symmetry is why two networks trained from different seeds
    can have the same function but very different weights (chapter 3).

    Args:
        model: an MLP (see :class:`~kt_helpers.models.MLP`).
        perms: one permutation per hidden layer, each of that layer's width.
    """
    positions = _linear_positions(model, "permute_hidden", "model")
    if len(perms) != len(positions) - 1:
        raise ValueError(
            "The 'perms' parameter of permute_hidden must hold one permutation per hidden layer. "
            f"Expected {len(positions) - 1}, got {len(perms)} instead."
        )
    out = copy.deepcopy(model)
    for layer_idx, perm in enumerate(perms):
        perm_t = torch.as_tensor(perm, dtype=torch.int64)
        width = out[positions[layer_idx]].out_features
        if perm_t.ndim != 1 or sorted(perm_t.tolist()) != list(range(width)):
            raise ValueError(
                f"The 'perms' parameter of permute_hidden must hold, for hidden layer {layer_idx}, "
                f"a permutation of 0..{width - 1}. Got {perm_t.tolist()} instead."
            )
        this, nxt = out[positions[layer_idx]], out[positions[layer_idx + 1]]
        with torch.no_grad():
            this.weight.copy_(this.weight[perm_t])  # (h, in): reorder rows (units)
            if this.bias is not None:
                this.bias.copy_(this.bias[perm_t])
            nxt.weight.copy_(nxt.weight[:, perm_t])  # (out, h): reorder columns
    return out


def match_weights(
    reference: nn.Sequential, other: nn.Sequential, *, max_iter: int = 100, seed: int = 0
) -> nn.Sequential:
    """Permute the hidden units of ``other`` to best match ``reference`` (weight matching).

    Finds permutations :math:`P_\\ell` of each hidden layer that maximise the
    inner product between the two networks' weights,

    .. math::
        \\max_{P_1..P_{L-1}} \\sum_\\ell \\langle W^A_\\ell,\\,
        P_\\ell W^B_\\ell P_{\\ell-1}^\\top \\rangle_F + \\langle b^A_\\ell, P_\\ell b^B_\\ell\\rangle,

    by coordinate descent: each layer's permutation given the others is a
    linear assignment problem (solved with :func:`scipy.optimize.linear_sum_assignment`),
    layers are visited in random order until no permutation changes
    (Ainsworth, Hayase and Srinivasa, 2023, "Git Re-Basin", Algorithm 1).

    Note:
        The paper starts the descent from identity permutations, from which it
        can stop at a local optimum even when ``other`` is an exactly permuted
        copy of ``reference``. Here it starts from one forward sweep that
        matches each layer's incoming weights and biases given the layers
        before it; for a permuted copy that sweep already finds the exact
        permutations, so the copy is mapped back onto ``reference`` exactly.

    Args:
        reference: the MLP to align to (network A).
        other: an MLP of the same architecture (network B).
        max_iter: maximum number of sweeps over the layers.
        seed: seed of the order in which layers are visited.

    Returns:
        A permuted copy of ``other`` that computes the same function as ``other``.
        Neither input is changed.
    """
    pos_a = _linear_positions(reference, "match_weights", "reference")
    pos_b = _linear_positions(other, "match_weights", "other")
    shapes_a = [tuple(reference[i].weight.shape) for i in pos_a]
    shapes_b = [tuple(other[i].weight.shape) for i in pos_b]
    if pos_a != pos_b or shapes_a != shapes_b:
        raise ValueError(
            "The 'reference' and 'other' parameters of match_weights must have the same "
            f"architecture. Got Linear weight shapes {shapes_a} and {shapes_b} instead."
        )
    check_int(max_iter, "match_weights", "max_iter")

    def params(model: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in pos_a:
            layer = model[i]
            bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            out.append((layer.weight.detach().double().cpu().numpy(), bias.detach().double().cpu().numpy()))
        return out

    from scipy.optimize import linear_sum_assignment  # here, not at the top: half a second of SciPy

    A, B = params(reference), params(other)
    num_hidden = len(pos_a) - 1
    perms: list[np.ndarray] = []
    for l in range(num_hidden):  # start: match incoming weights, layer by layer
        W_a, b_a = A[l]
        W_b, b_b = B[l]
        W_b_in = W_b if l == 0 else W_b[:, perms[l - 1]]  # inputs of B aligned to A
        _, cols = linear_sum_assignment(W_a @ W_b_in.T + np.outer(b_a, b_b), maximize=True)
        perms.append(cols)
    rng = np.random.default_rng(seed)

    for _ in range(max_iter):
        changed = False
        for l in rng.permutation(num_hidden):
            W_a, b_a = A[l]
            W_b, b_b = B[l]
            W_b_in = W_b if l == 0 else W_b[:, perms[l - 1]]  # inputs of B aligned to A
            score = W_a @ W_b_in.T + np.outer(b_a, b_b)  # (h, h): unit i of A vs unit j of B
            W_a_next, _ = A[l + 1]
            W_b_next, _ = B[l + 1]
            W_b_next_out = W_b_next if l + 1 == num_hidden else W_b_next[perms[l + 1]]
            score += W_a_next.T @ W_b_next_out  # (h, h) from the outgoing weights
            _, cols = linear_sum_assignment(score, maximize=True)
            if not np.array_equal(cols, perms[l]):
                perms[l] = cols
                changed = True
        if not changed:
            break
    return permute_hidden(other, [torch.as_tensor(p) for p in perms])


def net2wider(
    model: nn.Sequential,
    layer: int,
    new_width: int,
    *,
    noise: float = 0.0,
    seed: int = 0,
) -> nn.Sequential:
    """Widen one hidden layer of an MLP without changing the function it computes (Net2WiderNet).

    New units copy randomly chosen existing units: unit ``j`` of the wider
    layer is unit ``g(j)`` of the old one (``g(j) = j`` for the old units).
    Their incoming weights and biases are copied, and each outgoing weight is
    divided by the number of copies of its unit, so the next layer receives the
    same sum (Chen, Goodfellow and Shlens, 2016, "Net2Net", Algorithm 1):

    .. math::
        U'_{k,j} = \\frac{U_{k,g(j)}}{\\lvert\\{ j' : g(j') = g(j) \\}\\rvert}

    Args:
        model: an MLP (see :class:`~kt_helpers.models.MLP`).
        layer: index of the hidden layer to widen, 0 for the first.
        new_width: the new number of units, ≥ the current one.
        noise: standard deviation of noise added to the new outgoing weights,
            relative to their scale, to break the symmetry between copies
            (0 keeps the function exactly).
        seed: seed of the choice of units to copy and of the noise.

    Returns:
        A wider copy of ``model``; ``model`` itself is unchanged.
    """
    positions = _linear_positions(model, "net2wider", "model")
    num_hidden = len(positions) - 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_hidden:
        raise ValueError(
            f"The 'layer' parameter of net2wider must be a hidden layer index in "
            f"[0, {num_hidden - 1}]. Got {layer!r} instead."
        )
    this_pos, next_pos = positions[layer], positions[layer + 1]
    old = model[this_pos]
    width = old.out_features
    if isinstance(new_width, bool) or not isinstance(new_width, int) or new_width < width:
        raise ValueError(
            f"The 'new_width' parameter of net2wider must be an integer >= the current width "
            f"{width}. Got {new_width!r} instead."
        )
    check_non_negative(noise, "net2wider", "noise")
    gen = torch.Generator().manual_seed(seed)
    extra = torch.randint(0, width, (new_width - width,), generator=gen)
    mapping = torch.cat([torch.arange(width), extra])  # (new_width,) g(j)
    counts = torch.bincount(mapping, minlength=width).to(old.weight)  # copies per old unit

    nxt = model[next_pos]
    wide = nn.Linear(old.in_features, new_width, bias=old.bias is not None, dtype=old.weight.dtype)
    wide_next = nn.Linear(
        new_width, nxt.out_features, bias=nxt.bias is not None, dtype=nxt.weight.dtype
    )
    with torch.no_grad():
        wide.weight.copy_(old.weight[mapping])  # (new_width, in)
        if old.bias is not None:
            wide.bias.copy_(old.bias[mapping])
        U = nxt.weight[:, mapping] / counts[mapping]  # (out, new_width)
        if noise > 0:
            scale = U.abs().mean()
            U[:, width:] += noise * scale * torch.randn(U[:, width:].shape, generator=gen).to(U)
        wide_next.weight.copy_(U)
        if nxt.bias is not None:
            wide_next.bias.copy_(nxt.bias)
    out = copy.deepcopy(model)
    device = old.weight.device
    out[this_pos] = wide.to(device)
    out[next_pos] = wide_next.to(device)
    if layer == num_hidden - 1 and hasattr(out, "feature_dim"):
        out.feature_dim = new_width
    return out
