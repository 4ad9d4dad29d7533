"""Momentum, RMS and factored (Adafactor-style) gradient accumulators.

All accumulators carry a trailing decay axis of size K, so that one state
tracks several time scales at once: for a leaf of shape ``S`` the momentum is
``S + (K,)``. The arithmetic matches learned_optimization's ``common.py``
(spec §3.1–§3.2): no bias correction, RMS decays clipped to [0, 1], and the
factored statistics use ``g² + 1e-30``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np


class MomAccumulator(NamedTuple):
    """Momentum EMAs: ``m`` has a trailing decay axis, ``t`` counts updates per decay."""

    m: Any
    t: jnp.ndarray


class RmsAccumulator(NamedTuple):
    """Second-moment EMAs of the gradient, with the same layout as MomAccumulator."""

    rms: Any
    t: jnp.ndarray


@flax.struct.dataclass
class FactoredAccum:
    """Adafactor-style statistics; fields that do not apply to a leaf are empty."""

    v_col: Any
    v_row: Any
    v_diag: Any


def safe_rsqrt(x: jnp.ndarray) -> jnp.ndarray:
    """``rsqrt(max(x, 1e-9))``."""
    return jax.lax.rsqrt(jnp.maximum(x, 1e-9))


def _decays(decays) -> jnp.ndarray:
    return jnp.asarray(decays, dtype=jnp.float32)


def rolling_mom_init(params: Any, decays) -> MomAccumulator:
    k = len(decays)
    m = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape + (k,), p.dtype), params)
    return MomAccumulator(m=m, t=jnp.zeros((k,), jnp.int32))


def rolling_mom_update(state: MomAccumulator, grads: Any, decays) -> MomAccumulator:
    d = _decays(decays)
    m = jax.tree_util.tree_map(lambda m, g: d * m + (1 - d) * g[..., None], state.m, grads)
    return MomAccumulator(m=m, t=state.t + 1)


def rolling_rms_init(params: Any, decays) -> RmsAccumulator:
    k = len(decays)
    rms = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape + (k,), p.dtype), params)
    return RmsAccumulator(rms=rms, t=jnp.zeros((k,), jnp.int32))


def rolling_rms_update(state: RmsAccumulator, grads: Any, decays) -> RmsAccumulator:
    d = jnp.clip(_decays(decays), 0.0, 1.0)
    rms = jax.tree_util.tree_map(
        lambda v, g: d * v + (1 - d) * (g * g)[..., None], state.rms, grads
    )
    return RmsAccumulator(rms=rms, t=state.t + 1)


def factored_dims(shape) -> tuple[int, int] | None:
    """The two axes a factored accumulator reduces over, as ``(d1, d0)``.

    ``d0`` is the largest axis and ``d1`` the second largest; ties follow numpy's
    argsort, so a square matrix gives ``d0 = 1``. Rank < 2 is not factored.
    """
    if len(shape) < 2:
        return None
    order = np.argsort(shape)
    return int(order[-2]), int(order[-1])


def factored_init(params: Any, decays) -> FactoredAccum:
    k = len(decays)

    def one(p):
        dims = factored_dims(p.shape)
        empty = jnp.zeros((0, k), jnp.float32)
        if dims is None:
            return empty, empty, jnp.zeros(p.shape + (k,), jnp.float32)
        d1, d0 = dims
        v_row = jnp.zeros(tuple(np.delete(p.shape, d0)) + (k,), jnp.float32)
        v_col = jnp.zeros(tuple(np.delete(p.shape, d1)) + (k,), jnp.float32)
        return v_col, v_row, empty

    leaves, tree = jax.tree_util.tree_flatten(params)
    cols, rows, diags = zip(*[one(p) for p in leaves]) if leaves else ((), (), ())
    unflat = lambda xs: jax.tree_util.tree_unflatten(tree, list(xs))
    return FactoredAccum(v_col=unflat(cols), v_row=unflat(rows), v_diag=unflat(diags))


def factored_update(
    state: FactoredAccum, grads: Any, decays, epsilon: float = 1e-30
) -> tuple[FactoredAccum, Any]:
    """Update the factored statistics; returns ``(new_state, fac_g)``.

    ``fac_g`` is the gradient preconditioned by the factored (or diagonal)
    second moment, shaped ``g.shape + (K,)``.
    """
    d = jnp.clip(_decays(decays), 0.0, 1.0)
    mix = 1.0 - d

    def one(v_col, v_row, v_diag, g):
        g2 = g * g + epsilon
        dims = factored_dims(g.shape)
        if dims is None:
            new_v = d * v_diag + mix * g2[..., None]
            y = g[..., None] * safe_rsqrt(new_v + 1e-9)
            return v_col, v_row, new_v, y
        d1, d0 = dims
        new_row = d * v_row + mix * jnp.mean(g2, axis=d0)[..., None]
        new_col = d * v_col + mix * jnp.mean(g2, axis=d1)[..., None]
        reduced_d1 = d1 - 1 if d1 > d0 else d1
        row_col_mean = jnp.mean(new_row, axis=reduced_d1, keepdims=True)
        row_factor = safe_rsqrt(new_row / (row_col_mean + 1e-9))
        col_factor = safe_rsqrt(new_col)
        y = g[..., None] * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
        return new_col, new_row, v_diag, y

    g_leaves, tree = jax.tree_util.tree_flatten(grads)
    cols = tree.flatten_up_to(state.v_col)
    rows = tree.flatten_up_to(state.v_row)
    diags = tree.flatten_up_to(state.v_diag)
    outs = [one(*a) for a in zip(cols, rows, diags, g_leaves)]
    unflat = lambda i: jax.tree_util.tree_unflatten(tree, [o[i] for o in outs])
    return FactoredAccum(v_col=unflat(0), v_row=unflat(1), v_diag=unflat(2)), unflat(3)
