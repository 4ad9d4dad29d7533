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

Celo2 reuses the same network with keyword options (:func:`mlp_outputs`):
smaller epsilons, normalisation over the last two axes only, and no groups
9–13 for tensors of rank < 2.
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


def mlp_input_groups(
    p,
    g,
    m,
    rms,
    fac_g,
    v_col,
    v_row,
    v_diag,
    *,
    rsqrt_eps: float = 1e-6,
    vector_fac_groups: bool = True,
) -> list[jnp.ndarray]:
    """The 14 un-normalised input groups, each shaped ``p.shape + (C_k,)``.

    ``p`` and ``g`` must have rank ≥ 1 (scalars are reshaped by the caller).
    ``rsqrt_eps`` and ``vector_fac_groups`` are as in :func:`mlp_outputs`; with
    ``vector_fac_groups=False`` a non-factored tensor gets only groups 0–8.
    """
    rsqrt = jax.lax.rsqrt(rms + rsqrt_eps)
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
    elif vector_fac_groups:
        rs = jax.lax.rsqrt(v_diag + 1e-8)
        groups += [v_diag, v_diag, rs, rs, m * v_diag**-0.5]
    return groups


def _inv_rms(x, axis=None, eps=_NORM_EPS, keepdims=False):
    return jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axis, keepdims=keepdims))


def _reduced_axes(axes, removed):
    """``axes`` of a full tensor, renumbered for the tensor with axis ``removed`` dropped."""
    return tuple(a if a < removed else a - 1 for a in axes if a != removed)


def _dense(inputs, w, b):
    """``inputs @ w + b`` over a list of same-shape arrays, as multiply-adds."""
    outs = []
    for j in range(w.shape[1]):
        acc = inputs[0] * w[0, j]
        for i in range(1, len(inputs)):
            acc = acc + inputs[i] * w[i, j]
        outs.append(acc + b[j])
    return outs


def mlp_outputs(
    weights: dict,
    p,
    g,
    m,
    rms,
    fac_g,
    v_col,
    v_row,
    v_diag,
    *,
    rsqrt_eps: float = 1e-6,
    norm_eps: float = _NORM_EPS,
    norm_last_axes: int | None = None,
    vector_fac_groups: bool = True,
):
    """Direction ``d`` and magnitude ``μ`` of the per-parameter MLP.

    Args:
      weights: ``w0`` (30, H) (the ``w0__k`` blocks stacked in group order),
        ``b0`` (H,), ``w1`` (H, H), ``b1``, ``w2`` (H, 3), ``b2``.
      p, g: parameter and clipped gradient, rank ≥ 1.
      m, rms, fac_g, v_col, v_row, v_diag: updated accumulators, trailing decay
        axis; ``m`` and ``fac_g`` have 3 decays, ``rms`` one.
      rsqrt_eps: the ε of ``rsqrt(rms + ε)`` in groups 5, 6 and 8 (Celo and
        VeLO 1e-6, Celo2 1e-8).
      norm_eps: the ε of the per-channel second-moment normaliser (Celo and
        VeLO 1e-5, Celo2 1e-9).
      norm_last_axes: normalise each channel over the last this-many axes of
        ``p`` (Celo2: 2, so a rank-3 tensor is normalised per slice); None
        normalises over the whole tensor (Celo, VeLO).
      vector_fac_groups: a non-factored tensor (rank < 2) feeds ``v_diag`` to
        groups 9–13 (Celo, VeLO); False leaves those groups out (Celo2).

    Returns:
      ``(d, mu)``, each shaped like ``p``.
    """
    w0, b0 = weights["w0"], weights["b0"]
    off = GROUP_OFFSETS
    r = jax.lax.rsqrt(rms[..., 0] + rsqrt_eps)
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

    # Normalisation axes: None (with keepdims off) reduces the whole tensor to
    # one scalar per channel; a partial set keeps dims so it broadcasts back.
    whole = norm_last_axes is None or norm_last_axes >= p.ndim
    axes = None if whole else tuple(range(p.ndim - norm_last_axes, p.ndim))

    dims = factored_dims(g.shape)
    row_terms, col_terms = [], []
    if dims is not None:
        d1, d0 = dims
        row_factor, col_factor = _row_col_factors(v_row, v_col, d1, d0)
        for k, mk in enumerate(ms):
            fm = (
                mk
                * jnp.expand_dims(row_factor[..., k], d0)
                * jnp.expand_dims(col_factor[..., k], d1)
            )
            elem.append((fm, off[13] + k))
        # The row (column) groups are constant along d0 (d1), so their
        # normaliser over the tiled tensor is one over the reduced tensor.
        row_axes = tuple(range(v_row.ndim - 1)) if whole else _reduced_axes(axes, d0)
        col_axes = tuple(range(v_col.ndim - 1)) if whole else _reduced_axes(axes, d1)
        for k in range(v_row.shape[-1]):
            vr, vc = v_row[..., k], v_col[..., k]
            rr, rc = jax.lax.rsqrt(vr + 1e-8), jax.lax.rsqrt(vc + 1e-8)
            row_terms += [(vr, off[9] + k, row_axes), (rr, off[11] + k, row_axes)]
            col_terms += [(vc, off[10] + k, col_axes), (rc, off[12] + k, col_axes)]
    elif vector_fac_groups:
        for k in range(v_diag.shape[-1]):
            vd = v_diag[..., k]
            rs = jax.lax.rsqrt(vd + 1e-8)
            elem += [(vd, off[9] + k), (vd, off[10] + k), (rs, off[11] + k), (rs, off[12] + k)]
            elem.append((ms[k] * vd**-0.5, off[13] + k))

    hidden = w0.shape[1]

    def folded(x, row, ax):
        """Row ``row`` of w0 times the channel's normaliser, indexable by hidden unit."""
        inv = _inv_rms(x, ax, norm_eps, keepdims=not whole)
        if whole:
            return w0[row] * inv
        return [w0[row, j] * inv for j in range(hidden)]

    # Fold each channel's normaliser into its first-layer weights.
    elem_w = [(x, folded(x, row, axes)) for x, row in elem]
    row_w = [(x, folded(x, row, ax)) for x, row, ax in row_terms]
    col_w = [(x, folded(x, row, ax)) for x, row, ax in col_terms]

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
