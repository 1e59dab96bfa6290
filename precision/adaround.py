"""AdaRound: each INT8 weight rounded up or down so that the layer's output error is smallest
(Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

Rounding every weight to its nearest INT8 step minimises the error of the *weights*; what matters
is the error of the layer's *output* on real inputs, where the rounding errors of the weights that
read correlated inputs add up or cancel. AdaRound keeps every weight's step size (so the scale
TensorRT and the Q/DQ export compute from the weights, ``max |w| / 127`` per output channel, does
not change) and chooses, per weight, ``floor`` or ``ceil`` of ``w / step``.

The choice is relaxed to a continuous ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``
per weight (``zeta = 1.1``, ``gamma = -0.1``: the rectified sigmoid of the paper), initialised at
the weight's fractional part (so it starts at the float weights), and optimised with Adam on

    E(w~) / E_nearest  +  lam * sum(1 - |2 h - 1|^beta)

where ``E`` is the layer's summed squared output error (so the first term starts near 1 whatever
the layer's scale), the second term, summed over the free weights, pushes every ``h`` to 0 or 1,
and ``beta`` falls from 20 to 2 after a warm-up without it; the answer is ``h >= 0.5``.

The output error is a quadratic form, so the optimiser never touches the data: for one block
(a group of a grouped convolution, or the whole layer) with ``K`` inputs per output channel,

    E(v) = sum_c  v_c^T G v_c - 2 v_c^T R_c + P_c,     v_c = [w_c; b_c]

with ``G = sum_p a~_p a~_p^T`` the Gram matrix of the ``K + 1`` inputs one output position reads
(the quantized input patches and a 1 for the bias), ``R_c = sum_p a~_p y_pc`` their products with
the FP32 layer's outputs, ``P_c = sum_p y_pc^2``: exactly what
:mod:`trtq.precision.weight_correction` accumulates. The bias stays float: either a given one
(what the export uses: the layer's own, or weight correction's) or, at every step, its
least-squares value for the current weights (blocks may share one bias: ConvTranspose phases).
A layer whose rounded answer is worse than nearest rounding on this quadratic keeps nearest
rounding, so ``E`` never grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZETA, GAMMA = 1.1, -0.1
DEFAULT_ITERATIONS = 500  # measured: 0.43-0.49 of nearest rounding's excess error left, as 1000-2000 leave
DEFAULT_LAMBDA = 1.0
WARMUP = 0.2  # share of the iterations without the rounding term
BETA = (20.0, 2.0)


@dataclass(frozen=True)
class RoundingResult:
    """``codes``: the chosen integer steps (``w~ = codes * step``), float64, ``w0``'s shape;
    ``bias``: the given bias or the least-squares one for them, per output channel ([blocks, channels] or, with a
    shared bias, [channels]); ``error``/``error_nearest``: ``E`` of the answer and of nearest
    rounding (each with that bias; with ``ridge``, the pull included), in squared output units summed over the sampled
    positions and channels; ``flipped``: weights rounded away from their nearest step."""

    codes: np.ndarray
    bias: np.ndarray
    error: float
    error_nearest: float
    flipped: int


def adaround(
    gram: np.ndarray,
    cross: np.ndarray,
    power: float,
    w0: np.ndarray,
    step: np.ndarray,
    *,
    shared_bias: bool = False,
    bias: np.ndarray | None = None,
    ridge: float = 0.0,
    iterations: int = DEFAULT_ITERATIONS,
    lam: float = DEFAULT_LAMBDA,
    lr: float = 0.01,
    qmin: float = -127.0,
    qmax: float = 127.0,
) -> RoundingResult:
    """Choose ``floor`` or ``ceil`` of ``w0 / step`` for every weight (module docstring).

    ``gram`` [blocks, K + 1, K + 1], ``cross`` [blocks, K + 1, C] and ``power`` (the sum of
    squared FP32 outputs) as accumulated by weight correction, the last index of ``K + 1`` being
    the bias; ``w0`` [blocks, K, C] the float weights to round and ``step`` the same shape, the
    INT8 step of each weight (its channel's ``max |w| / 127``, times any constant the layer
    multiplies the weights by); ``shared_bias``: every block adds the same bias (ConvTranspose
    phases). ``bias`` [blocks, C]: keep this bias instead of fitting one. ``ridge`` adds
    ``ridge * mean(diag(G_ww)) * ||w~ - w0||^2`` to ``E`` (a pull toward the float weights that
    keeps a few calibration samples from being overfitted; the errors returned include it). Codes stay in
    ``[qmin, qmax]``; a weight already on a step, or whose nearest step is ``qmin`` or ``qmax``,
    keeps it.
    """
    if ridge > 0:  # E + lam ||w~ - w0||^2: the quadratic with lam I on the weights' block
        k = gram.shape[1] - 1
        pull = ridge * np.mean(np.diagonal(gram, axis1=1, axis2=2)[:, :k], axis=1)[:, None, None]
        gram = gram.copy()
        cross = cross.copy()
        gram[:, :k, :k] += pull * np.eye(k)
        cross[:, :k] += pull * w0
        power = power + float(np.sum(pull * w0 * w0))
    x = w0 / step
    base = np.floor(x)
    frac = x - base
    near = np.clip(np.rint(x), qmin, qmax)
    # A weight on a step, or whose nearest step ends the range (a channel's max |w|), keeps it: the
    # channel's max |w~| then equals its max |w|, so the scale computed from w~ is the same.
    free = (frac > 0) & (np.abs(near) < qmax) & (base >= qmin) & (base + 1 <= qmax)
    e_near, b_near = _error(gram, cross, power, near * step, shared_bias, bias)
    if not free.any() or iterations <= 0 or e_near <= 0:
        return RoundingResult(near, b_near, e_near, e_near, 0)

    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-6, 1 - 1e-6)
    v = np.log(p / (1 - p))
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    warm = int(WARMUP * iterations)
    # the loop's products in float32 (a gradient needs no more; the answer is scored in float64)
    g_ww = gram[:, :-1, :-1].astype(np.float32)
    g_wb, r_w = gram[:, :-1, -1:], cross[:, :-1]
    fixed = (
        None if bias is None else g_wb * np.broadcast_to(bias, (gram.shape[0], bias.shape[-1]))[:, None, :]
    )
    for t in range(1, iterations + 1):
        sig = 1.0 / (1.0 + np.exp(-v))
        h_raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(h_raw, 0.0, 1.0)
        w = (base + np.where(free, h, near - base)) * step
        if fixed is None:  # the bias at its optimum for w (envelope theorem: no gradient through it)
            b = _bias(gram, cross, w, shared_bias)
            g_b = g_wb * np.broadcast_to(b, (gram.shape[0], b.shape[-1]))[:, None, :]
        else:
            g_b = fixed
        # dE/dw = 2 (G_ww w + G_wb b - R_w)
        grad_w = 2.0 * (np.matmul(g_ww, w.astype(np.float32)) + g_b - r_w)
        grad_h = grad_w * step / e_near
        if t > warm:
            beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (t - warm) / max(iterations - warm, 1))
            d = 2 * h - 1
            grad_h = grad_h - lam * beta * np.abs(d) ** (beta - 1) * np.sign(d) * 2
        gate = (h_raw > 0) & (h_raw < 1) & free
        grad_v = np.where(gate, grad_h * sig * (1 - sig) * (ZETA - GAMMA), 0.0)
        m1 = b1 * m1 + (1 - b1) * grad_v
        m2 = b2 * m2 + (1 - b2) * grad_v**2
        v -= lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    sig = 1.0 / (1.0 + np.exp(-v))
    h = np.clip(sig * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
    codes = np.where(free, base + (h >= 0.5), near)
    e, b = _error(gram, cross, power, codes * step, shared_bias, bias)
    if e >= e_near:
        return RoundingResult(near, b_near, e_near, e_near, 0)
    return RoundingResult(codes, b, e, e_near, int(np.sum(codes != near)))


def _bias(gram: np.ndarray, cross: np.ndarray, w: np.ndarray, shared: bool) -> np.ndarray:
    """The least-squares bias for weights ``w`` [blocks, K, C]: [blocks, C], or [C] when shared."""
    num = cross[:, -1, :] - np.einsum("gk,gkc->gc", gram[:, -1, :-1], w)
    den = gram[:, -1, -1][:, None]
    if shared:
        num, den = num.sum(axis=0), den.sum(axis=0)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _error(
    gram: np.ndarray,
    cross: np.ndarray,
    power: float,
    w: np.ndarray,
    shared: bool,
    bias: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``E`` of weights ``w`` with ``bias`` (None: their least-squares bias), and that bias."""
    b = _bias(gram, cross, w, shared) if bias is None else bias
    bb = np.broadcast_to(b, (gram.shape[0], b.shape[-1]))[:, None, :]
    v = np.concatenate([w, bb], axis=1)
    e = np.sum(np.matmul(gram, v) * v) - 2 * np.sum(v * cross) + power
    return float(max(e, 0.0)), b
