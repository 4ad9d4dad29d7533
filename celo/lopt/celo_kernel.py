"""Celo's per-tensor update as a cache- and fusion-friendly XLA program.

This computes exactly what :func:`celo.lopt.ff_mlp.mlp_outputs` plus the
accumulator updates compute (spec §4.4–§4.7), arranged for XLA's CPU backend:

* Accumulators are stored **decay-major, one array per decay** (``m`` is a
  tuple of K arrays shaped like the parameter), so no pass ever reads a
  strided slice of a ``(..., K)`` array.
* The 30 normaliser statistics ``mean(x_c²)`` are taken in forms a fused
  reduction handles directly: ``clip(g, ±0.1)² = min(g², 0.01)``,
  ``rsqrt(v + ε)² = 1/(v + ε)``, and for the Adafactor channels (constant along
  one axis of a matrix) ``Σ X·a_i²·b_j²`` is a matrix-vector product.
* The MLP is one elementwise pass that recomputes the features from the raw
  inputs (no ``(..., 30)`` tensor), with each channel's normaliser folded into
  its first-layer weights and the row/column channels pushed through the first
  layer at their reduced size.
* ``optimization_barrier`` separates the statistics pass from the MLP pass so
  that XLA neither materialises features shared between them nor recomputes
  the accumulator updates.

The literal form of the features is :func:`celo.lopt.ff_mlp.mlp_input_groups`;
tests check both agree to float32 rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from celo.lopt.accumulators import factored_dims, safe_rsqrt
from celo.lopt.ff_mlp import GROUP_OFFSETS

_NORM_EPS = 1e-5


class LeafState(NamedTuple):
    """Accumulators of one tensor: every field is a tuple over decays."""

    m: tuple  # momentum, one array per decay, shaped like the parameter
    rms: tuple  # second moment, one array per decay
    v_row: tuple  # factored: per decay, the parameter shape without axis d0; else ()
    v_col: tuple  # factored: per decay, the parameter shape without axis d1; else ()
    v_diag: tuple  # not factored: per decay, the parameter shape; else ()


def init_leaf(p: jnp.ndarray, n_mom: int, n_rms: int, n_fac: int) -> LeafState:
    shape = p.shape if p.ndim else (1,)
    zeros = lambda s, k: tuple(jnp.zeros(s, jnp.float32) for _ in range(k))
    dims = factored_dims(shape)
    if dims is None:
        fac = ((), (), zeros(shape, n_fac))
    else:
        d1, d0 = dims
        row = tuple(s for i, s in enumerate(shape) if i != d0)
        col = tuple(s for i, s in enumerate(shape) if i != d1)
        fac = (zeros(row, n_fac), zeros(col, n_fac), ())
    return LeafState(zeros(shape, n_mom), zeros(shape, n_rms), *fac)


def _inv_rms(sum_sq, n):
    return lax.rsqrt(_NORM_EPS + sum_sq / n)


def _weighted_sum(x, a, b, ax_a, ax_b):
    """``Σ x · a[idx_a] · b[idx_b]`` where ``a`` spans every axis but ``ax_a`` etc."""
    if x.ndim == 2:
        # a is indexed by the axis other than ax_a; b by the axis other than ax_b.
        if ax_a == 1:  # a indexed by axis 0, b by axis 1
            return jnp.dot(a, x @ b)
        return jnp.dot(b, x @ a)
    return jnp.sum(x * jnp.expand_dims(a, ax_a) * jnp.expand_dims(b, ax_b))


def celo_leaf_update(
    weights: dict,
    p: jnp.ndarray,
    g: jnp.ndarray,
    state: LeafState,
    decays: tuple[tuple, tuple, tuple],
    *,
    lr_mult: jnp.ndarray | None,
    exp_mult: float = 1e-3,
    step_mult: float = 1e-3,
) -> tuple[jnp.ndarray, LeafState]:
    """One Celo update of one tensor.

    Args:
      weights: interpolated MLP weights (``w0`` (30, H), ``b0``, ``w1``, ``b1``,
        ``w2``, ``b2``).
      p, g: the parameter and its gradient (already clipped to ±1000).
      state: the tensor's accumulators (decay-major).
      decays: ``(momentum, rms, adafactor)`` decay tuples.
      lr_mult: the scheduler's step multiplier, or None (phase 1).

    Returns:
      ``(new_p, new_state)``.
    """
    scalar = p.ndim == 0
    if scalar:
        p, g = p[None], g[None]
    mom_d, rms_d, fac_d = decays
    w0, b0 = weights["w0"], weights["b0"]
    off = GROUP_OFFSETS
    n = p.size
    gg = g * g

    # Accumulators (§3.1–3.2); the RMS and Adafactor decays are clipped to [0, 1].
    # Decays and 1 − decay are float32, as in the reference (1 − 0.999 in float32
    # is 0.00099998713, not 0.001).
    f32 = lambda d, clip=False: np.float32(min(max(d, 0.0), 1.0) if clip else d)
    m = tuple(f32(d) * mk + (np.float32(1) - f32(d)) * g for d, mk in zip(mom_d, state.m))
    rms_c = [f32(d, clip=True) for d in rms_d]
    rms = tuple(d * vk + (np.float32(1) - d) * gg for d, vk in zip(rms_c, state.rms))
    fac_c = [f32(d, clip=True) for d in fac_d]
    g2 = gg + 1e-30
    dims = factored_dims(g.shape)
    if dims is not None:
        d1, d0 = dims
        row_mean, col_mean = jnp.mean(g2, axis=d0), jnp.mean(g2, axis=d1)
        v_row = tuple(d * vr + (np.float32(1) - d) * row_mean for d, vr in zip(fac_c, state.v_row))
        v_col = tuple(d * vc + (np.float32(1) - d) * col_mean for d, vc in zip(fac_c, state.v_col))
        v_diag = ()
        red = d1 - 1 if d1 > d0 else d1
        row_f = [safe_rsqrt(vr / (jnp.mean(vr, axis=red, keepdims=True) + 1e-9)) for vr in v_row]
        col_f = [safe_rsqrt(vc) for vc in v_col]
    else:
        v_row = v_col = ()
        v_diag = tuple(d * vd + (np.float32(1) - d) * g2 for d, vd in zip(fac_c, state.v_diag))
    m, rms, v_diag = lax.optimization_barrier((m, rms, v_diag))
    v = rms[0]

    # Pass 1: the per-channel statistics Σ x_c² (in order of GROUP_OFFSETS rows).
    q = 1.0 / (v + 1e-6)  # = rsqrt(v + 1e-6)²
    sums = {
        off[0]: jnp.sum(gg),
        off[1]: jnp.sum(jnp.minimum(gg, 0.01)),
        off[2]: jnp.sum(p * p),
        off[4]: jnp.sum(v * v),
        off[6]: jnp.sum(q),
        off[8]: jnp.sum(gg * q),
    }
    for k, mk in enumerate(m):
        sums[off[3] + k] = jnp.sum(mk * mk)
        sums[off[5] + k] = jnp.sum(mk * mk * q)
    if dims is not None:
        for k in range(len(m)):
            rf2, cf2 = row_f[k] * row_f[k], col_f[k] * col_f[k]
            sums[off[7] + k] = _weighted_sum(g2, rf2, cf2, d0, d1)
            sums[off[13] + k] = _weighted_sum(m[k] * m[k], rf2, cf2, d0, d1)
    else:
        for k, vd in enumerate(v_diag):
            sums[off[7] + k] = jnp.sum(gg / (vd + 1e-9))  # fac_g = g·rsqrt(v_diag + 1e-9)
            sums[off[9] + k] = sums[off[10] + k] = jnp.sum(vd * vd)
            sums[off[11] + k] = sums[off[12] + k] = jnp.sum(1.0 / (vd + 1e-8))
            sums[off[13] + k] = jnp.sum(m[k] * m[k] / vd)
    scale = {row: w0[row] * _inv_rms(s, n) for row, s in sums.items()}

    # Row / column channels (groups 9–12) through the first layer at reduced size.
    if dims is not None:
        row_terms = jnp.broadcast_to(b0, v_row[0].shape + b0.shape)
        col_terms = 0.0
        for k in range(len(v_row)):
            for x, base in ((v_row[k], off[9]), (lax.rsqrt(v_row[k] + 1e-8), off[11])):
                row_terms = row_terms + x[..., None] * (
                    w0[base + k] * _inv_rms(jnp.sum(x * x), x.size)
                )
            for x, base in ((v_col[k], off[10]), (lax.rsqrt(v_col[k] + 1e-8), off[12])):
                col_terms = col_terms + x[..., None] * (
                    w0[base + k] * _inv_rms(jnp.sum(x * x), x.size)
                )

    # Pass 2: features and MLP in one elementwise loop.
    p2, g2b, m2, v2, vd2 = lax.optimization_barrier((p, g, m, v, v_diag))
    r = lax.rsqrt(v2 + 1e-6)
    feats = [
        (g2b, off[0]),
        (jnp.clip(g2b, -0.1, 0.1), off[1]),
        (p2, off[2]),
        (v2, off[4]),
        (r, off[6]),
        (g2b * r, off[8]),
    ]
    for k, mk in enumerate(m2):
        feats += [(mk, off[3] + k), (mk * r, off[5] + k)]
    if dims is not None:
        for k, mk in enumerate(m2):
            fac = jnp.expand_dims(row_f[k], d0) * jnp.expand_dims(col_f[k], d1)
            feats += [(g2b * fac, off[7] + k), (mk * fac, off[13] + k)]
    else:
        for k, vd in enumerate(vd2):
            rs = lax.rsqrt(vd + 1e-8)
            feats += [
                (g2b * safe_rsqrt(vd + 1e-9), off[7] + k),
                (vd, off[9] + k),
                (vd, off[10] + k),
                (rs, off[11] + k),
                (rs, off[12] + k),
                (m2[k] * vd**-0.5, off[13] + k),
            ]

    hidden = w0.shape[1]
    z = []
    for j in range(hidden):
        acc = None
        for x, row in feats:
            term = x * scale[row][j]
            acc = term if acc is None else acc + term
        if dims is not None:
            acc = (
                acc
                + jnp.expand_dims(row_terms[..., j], d0)
                + jnp.expand_dims(col_terms[..., j], d1)
            )
        else:
            acc = acc + b0[j]
        z.append(jax.nn.relu(acc))
    w1, b1, w2, b2 = weights["w1"], weights["b1"], weights["w2"], weights["b2"]
    h = []
    for i in range(w1.shape[1]):
        acc = z[0] * w1[0, i]
        for j in range(1, hidden):
            acc = acc + z[j] * w1[j, i]
        h.append(jax.nn.relu(acc + b1[i]))
    outs = []
    for o in range(2):
        acc = h[0] * w2[0, o]
        for i in range(1, len(h)):
            acc = acc + h[i] * w2[i, o]
        outs.append(acc + b2[o])
    d, mu = outs

    param_scale = jnp.sqrt(sums[off[2]] / n + 1e-9)
    step = d * (param_scale * jnp.exp(mu * exp_mult)) * step_mult
    if lr_mult is not None:
        step = lr_mult * step
    new_p = p2 - step
    if scalar:
        new_p = new_p[0]
    return new_p, LeafState(m, rms, v_row, v_col, v_diag)
