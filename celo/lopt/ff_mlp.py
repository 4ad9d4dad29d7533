"""The per-parameter MLP update rule shared by Celo and VeLO (spec §4.6, §6.2).

Fourteen input groups (30 channels) are built from the gradient, the parameter
and the *updated* accumulators; each group is normalised by its second moment
over the whole tensor and fed to a 30→H→H→3 MLP with ReLU.

Two implementations are provided:

* :func:`mlp_input_groups` builds the 14 groups literally, as the reference
  does. It is used by tests and as documentation.
* :func:`mlp_outputs` is what the optimizers run. It never materialises the
  ``(..., 30)`` feature tensor: the per-channel normaliser is folded into the
  first-layer weights (``W0[c] · rsqrt(eps + mean(x_c²))``), the MLP is written
  as explicit multiply-adds that XLA fuses into one elementwise loop, and the
  Adafactor row/column groups (9–12), which are constant along one axis, are
  pushed through the first layer at their reduced size and broadcast after.
  The result equals the literal form up to float32 rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from celo.lopt.accumulators import factored_dims, safe_rsqrt

#: Channels per input group, in order (spec §4.6).
GROUP_CHANNELS = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
NUM_INPUTS = sum(GROUP_CHANNELS)
_NORM_EPS = 1e-5


def _offsets():
    out, acc = [], 0
    for c in GROUP_CHANNELS:
        out.append(acc)
        acc += c
    return tuple(out)


GROUP_OFFSETS = _offsets()


def _row_col_factors(v_row, v_col, d1, d0):
    reduced_d1 = d1 - 1 if d1 > d0 else d1
    row_col_mean = jnp.mean(v_row, axis=reduced_d1, keepdims=True)
    row_factor = safe_rsqrt(v_row / (row_col_mean + 1e-9))
    col_factor = safe_rsqrt(v_col)
    return row_factor, col_factor


def mlp_input_groups(p, g, m, rms, fac_g, v_col, v_row, v_diag) -> list[jnp.ndarray]:
    """The 14 un-normalised input groups, each shaped ``p.shape + (C_k,)``.

    ``p`` and ``g`` must have rank ≥ 1 (scalars are reshaped by the caller).
    """
    rsqrt = jax.lax.rsqrt(rms + 1e-6)
    groups = [
        g[..., None],
        jnp.clip(g, -0.1, 0.1)[..., None],
        p[..., None],
        m,
        rms,
        m * rsqrt,
        rsqrt,
        fac_g,
        g[..., None] * rsqrt,
    ]
    dims = factored_dims(g.shape)
    if dims is not None:
        d1, d0 = dims
        row = jnp.broadcast_to(jnp.expand_dims(v_row, d0), g.shape + v_row.shape[-1:])
        col = jnp.broadcast_to(jnp.expand_dims(v_col, d1), g.shape + v_col.shape[-1:])
        row_factor, col_factor = _row_col_factors(v_row, v_col, d1, d0)
        fac_mom = m * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
        groups += [row, col, jax.lax.rsqrt(row + 1e-8), jax.lax.rsqrt(col + 1e-8), fac_mom]
    else:
        rs = jax.lax.rsqrt(v_diag + 1e-8)
        groups += [v_diag, v_diag, rs, rs, m * v_diag**-0.5]
    return groups


def _inv_rms(x, axis=None):
    return jax.lax.rsqrt(_NORM_EPS + jnp.mean(jnp.square(x), axis=axis))


def _dense(inputs, w, b):
    """``inputs @ w + b`` over a list of same-shape arrays, as multiply-adds."""
    outs = []
    for j in range(w.shape[1]):
        acc = inputs[0] * w[0, j]
        for i in range(1, len(inputs)):
            acc = acc + inputs[i] * w[i, j]
        outs.append(acc + b[j])
    return outs


def mlp_outputs(weights: dict, p, g, m, rms, fac_g, v_col, v_row, v_diag):
    """Direction ``d`` and magnitude ``μ`` of the per-parameter MLP.

    Args:
      weights: ``w0`` (30, H) (the ``w0__k`` blocks stacked in group order),
        ``b0`` (H,), ``w1`` (H, H), ``b1``, ``w2`` (H, 3), ``b2``.
      p, g: parameter and clipped gradient, rank ≥ 1.
      m, rms, fac_g, v_col, v_row, v_diag: updated accumulators, trailing decay
        axis; ``m`` and ``fac_g`` have 3 decays, ``rms`` one.

    Returns:
      ``(d, mu)``, each shaped like ``p``.
    """
    w0, b0 = weights["w0"], weights["b0"]
    off = GROUP_OFFSETS
    r = jax.lax.rsqrt(rms[..., 0] + 1e-6)
    ms = [m[..., k] for k in range(m.shape[-1])]
    fgs = [fac_g[..., k] for k in range(fac_g.shape[-1])]

    # Per-element channels with their row index in w0.
    elem = [(g, off[0]), (jnp.clip(g, -0.1, 0.1), off[1]), (p, off[2])]
    elem += [(mk, off[3] + k) for k, mk in enumerate(ms)]
    elem += [(rms[..., 0], off[4])]
    elem += [(mk * r, off[5] + k) for k, mk in enumerate(ms)]
    elem += [(r, off[6])]
    elem += [(fk, off[7] + k) for k, fk in enumerate(fgs)]
    elem += [(g * r, off[8])]

    dims = factored_dims(g.shape)
    row_terms, col_terms = [], []
    if dims is not None:
        d1, d0 = dims
        row_factor, col_factor = _row_col_factors(v_row, v_col, d1, d0)
        for k, mk in enumerate(ms):
            fm = mk * jnp.expand_dims(row_factor[..., k], d0) * jnp.expand_dims(
                col_factor[..., k], d1
            )
            elem.append((fm, off[13] + k))
        row_axes = tuple(range(v_row.ndim - 1))
        col_axes = tuple(range(v_col.ndim - 1))
        for k in range(v_row.shape[-1]):
            vr, vc = v_row[..., k], v_col[..., k]
            rr, rc = jax.lax.rsqrt(vr + 1e-8), jax.lax.rsqrt(vc + 1e-8)
            row_terms += [(vr, off[9] + k, row_axes), (rr, off[11] + k, row_axes)]
            col_terms += [(vc, off[10] + k, col_axes), (rc, off[12] + k, col_axes)]
    else:
        for k in range(v_diag.shape[-1]):
            vd = v_diag[..., k]
            rs = jax.lax.rsqrt(vd + 1e-8)
            elem += [(vd, off[9] + k), (vd, off[10] + k), (rs, off[11] + k), (rs, off[12] + k)]
            elem.append((ms[k] * vd**-0.5, off[13] + k))

    # Fold each channel's normaliser into its first-layer weights: (H,) per channel.
    elem_w = [(x, w0[row] * _inv_rms(x)) for x, row in elem]
    row_w = [(x, w0[row] * _inv_rms(x, ax)) for x, row, ax in row_terms]
    col_w = [(x, w0[row] * _inv_rms(x, ax)) for x, row, ax in col_terms]

    hidden = w0.shape[1]
    z = []
    for j in range(hidden):
        acc = elem_w[0][0] * elem_w[0][1][j]
        for x, w in elem_w[1:]:
            acc = acc + x * w[j]
        acc = acc + b0[j]
        if row_w:
            d1, d0 = dims
            rsum = row_w[0][0] * row_w[0][1][j]
            for x, w in row_w[1:]:
                rsum = rsum + x * w[j]
            csum = col_w[0][0] * col_w[0][1][j]
            for x, w in col_w[1:]:
                csum = csum + x * w[j]
            acc = acc + jnp.expand_dims(rsum, d0) + jnp.expand_dims(csum, d1)
        z.append(acc)

    h = [jax.nn.relu(zj) for zj in z]
    h = [jax.nn.relu(x) for x in _dense(h, weights["w1"], weights["b1"])]
    out = _dense(h, weights["w2"][:, :2], weights["b2"][:2])
    return out[0], out[1]


def stack_w0(ff: dict, prefix: str = "w0__") -> jnp.ndarray:
    """Concatenate the 14 ``w0__k`` blocks (last two axes ``(C_k, H)``) in group order."""
    return jnp.concatenate([ff[f"{prefix}{k}"] for k in range(len(GROUP_CHANNELS))], axis=-2)
