"""Shampoo with Adam grafting, as an optax transformation.

optax ships no Shampoo or SOAP, and the PyPI ports fail on current JAX, so the
project carries this compact version (Gupta et al. 2018; Anil et al. 2020):

* matrices (and tensors reshaped to 2-D by merging leading axes) with both
  sides ≤ ``max_precond_dim`` keep left/right statistics
  ``L ← β₂L + (1−β₂)GGᵀ`` and ``R ← β₂R + (1−β₂)GᵀG``;
* every ``precondition_every`` steps the inverse fourth roots
  ``(L + εI)^(−1/4)`` and ``(R + εI)^(−1/4)`` are recomputed by ``eigh``;
* the preconditioned momentum ``P_L M P_R`` is rescaled to the norm of the
  Adam update of the same tensor (layer-wise grafting), so the learning rate
  has Adam's meaning;
* other leaves (vectors, scalars, over-large matrices) use plain Adam.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ShampooState(NamedTuple):
    count: jnp.ndarray
    mu: Any
    nu: Any
    stats_l: Any
    stats_r: Any
    precond_l: Any
    precond_r: Any


def _as_matrix_shape(shape, max_dim: int):
    if len(shape) < 2:
        return None
    rows = 1
    for s in shape[:-1]:
        rows *= s
    cols = shape[-1]
    if rows > max_dim or cols > max_dim or rows < 2 or cols < 2:
        return None
    return rows, cols


def _inv_fourth_root(mat: jnp.ndarray, eps: float) -> jnp.ndarray:
    n = mat.shape[0]
    mat = mat + eps * jnp.eye(n, dtype=mat.dtype)
    w, v = jnp.linalg.eigh(mat)
    w = jnp.maximum(w, eps)
    return (v * w**-0.25) @ v.T


def scale_by_shampoo(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    matrix_eps: float = 1e-6,
    precondition_every: int = 10,
    max_precond_dim: int = 1024,
) -> optax.GradientTransformation:
    """Shampoo direction with Adam-norm grafting (no learning rate applied)."""

    def init_fn(params):
        zeros = lambda p: jnp.zeros_like(p)

        def stat(p, side):
            shape = _as_matrix_shape(p.shape, max_precond_dim)
            if shape is None:
                return jnp.zeros((0, 0), p.dtype)
            n = shape[0] if side == 0 else shape[1]
            return jnp.zeros((n, n), p.dtype)

        def eye(p, side):
            shape = _as_matrix_shape(p.shape, max_precond_dim)
            if shape is None:
                return jnp.zeros((0, 0), p.dtype)
            n = shape[0] if side == 0 else shape[1]
            return jnp.eye(n, dtype=p.dtype)

        tm = jax.tree_util.tree_map
        return ShampooState(
            count=jnp.zeros([], jnp.int32),
            mu=tm(zeros, params),
            nu=tm(zeros, params),
            stats_l=tm(lambda p: stat(p, 0), params),
            stats_r=tm(lambda p: stat(p, 1), params),
            precond_l=tm(lambda p: eye(p, 0), params),
            precond_r=tm(lambda p: eye(p, 1), params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count + 1
        refresh = (count - 1) % precondition_every == 0
        c1 = 1 - b1**count
        c2 = 1 - b2**count

        def one(g, mu, nu, sl, sr, pl, pr):
            mu = b1 * mu + (1 - b1) * g
            nu = b2 * nu + (1 - b2) * g * g
            adam = (mu / c1) / (jnp.sqrt(nu / c2) + eps)
            shape = _as_matrix_shape(g.shape, max_precond_dim)
            if shape is None:
                return adam, mu, nu, sl, sr, pl, pr
            g2 = g.reshape(shape)
            sl = b2 * sl + (1 - b2) * g2 @ g2.T
            sr = b2 * sr + (1 - b2) * g2.T @ g2
            pl, pr = jax.lax.cond(
                refresh,
                lambda: (_inv_fourth_root(sl, matrix_eps), _inv_fourth_root(sr, matrix_eps)),
                lambda: (pl, pr),
            )
            direction = pl @ (mu / c1).reshape(shape) @ pr
            scale = jnp.linalg.norm(adam) / (jnp.linalg.norm(direction) + 1e-16)
            return (direction * scale).reshape(g.shape), mu, nu, sl, sr, pl, pr

        leaves, treedef = jax.tree_util.tree_flatten(updates)
        rest = [treedef.flatten_up_to(x) for x in state[1:]]
        outs = [one(g, *r) for g, *r in zip(leaves, *rest)]
        un = lambda i: jax.tree_util.tree_unflatten(treedef, [o[i] for o in outs])
        return un(0), ShampooState(count, un(1), un(2), un(3), un(4), un(5), un(6))

    return optax.GradientTransformation(init_fn, update_fn)


def shampoo(learning_rate: float = 1e-3, **kwargs) -> optax.GradientTransformation:
    """Shampoo with Adam grafting followed by ``scale(−learning_rate)``."""
    return optax.chain(scale_by_shampoo(**kwargs), optax.scale(-learning_rate))
