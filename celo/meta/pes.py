"""Estimator math as pure functions: perturbations, truncated PES, FullES (spec §10.6).

Everything here works on one task family's particles (leading axis ``N``),
with theta, perturbations, accumulators and gradients as flat vectors
(``jax.flatten_util.ravel_pytree`` order), and returns *per-particle* gradient
contributions; the caller reduces them (after
gathering them across devices, so the result does not depend on how the
particles were sharded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from celo.utils import pytree_to_ordered_dict


def trainable_mask(theta: Any, frozen_keys: Sequence[str] | None) -> Any:
    """A tree of Python bools: False where any frozen key is a substring of the leaf path.

    Leaf paths are ``/``-joined key paths (``ff_mod_stack/~/w0__3``), as the
    reference's ``map_named`` builds them.
    """
    names = [p.lstrip("/") for p in pytree_to_ordered_dict(theta)]
    flags = [not any(k in name for k in (frozen_keys or ())) for name in names]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(theta), flags)


def flat_mask(theta: Any, trainable: Any) -> np.ndarray:
    """The leaf mask expanded to one bool per element of ``ravel_pytree(theta)``."""
    leaves = jax.tree_util.tree_leaves(theta)
    flags = jax.tree_util.tree_structure(theta).flatten_up_to(trainable)
    return np.concatenate([np.full(np.size(x), bool(f)) for x, f in zip(leaves, flags)])


def sample_perturbation(size: int, key: jax.Array, std: float, mask: np.ndarray | None = None):
    """``ε = std · N(0, I)`` over the flattened theta of one particle.

    One draw for the whole vector (rather than one per leaf, as the reference
    does) keeps the compiled program small; the distribution is the same.
    Entries where ``mask`` is False are exact zeros, and the other entries do
    not depend on the mask.
    """
    eps = std * jax.random.normal(key, (size,), jnp.float32)
    if mask is not None and not mask.all():
        eps = jnp.where(jnp.asarray(mask), eps, 0.0)
    return eps


def antithetic(theta: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    """``θ ± ε`` for flat vectors: ``eps [..., D]`` gives ``[..., 2, D]``."""
    return jnp.stack([theta + eps, theta - eps], axis=-2)


def _scale_rows(coef: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.reshape(coef, coef.shape + (1,) * (x.ndim - coef.ndim)) * x


class PESOut(NamedTuple):
    """Per-particle results of one truncation window.

    Attributes:
      grads: per-particle gradient contributions ``ĝ_i`` (leading axis N).
      accumulator: the new PES accumulators.
      loss: per-particle mean of the ± window losses, ``[N]``.
      delta: per-particle masked mean of ``L⁺ − L⁻``, ``[N]``.
      masked_nonfinite: steps dropped because a loss was not finite, ``[N]``.
      finished: whether the trajectory reset inside the window, ``[N]``.
    """

    grads: Any
    accumulator: Any
    loss: jnp.ndarray
    delta: jnp.ndarray
    masked_nonfinite: jnp.ndarray
    finished: jnp.ndarray


def pes_window(eps, accumulator, loss_pos, loss_neg, is_done, mask, std: float) -> PESOut:
    """Truncated PES for one window (``compute_pes_grad``).

    Args:
      eps: perturbations, leading axis N.
      accumulator: ``a_i`` (sum of the perturbations the running trajectory
        has seen before this window), leading axis N.
      loss_pos, loss_neg: normalised per-step losses ``[T, N]``.
      is_done: trajectory-finished flags ``[T, N]`` (equal for both signs).
      mask: False on reset steps ``[T, N]``.
      std: σ.

    The window is split at the first finished flag, *inclusive*: the losses up
    to and including the last step of a finishing trajectory go to ``B`` (the
    reference's attribution, spec §15.1 item 21). Steps with a non-finite loss
    on either side are dropped from both sums and from the count.
    """
    finite = jnp.isfinite(loss_pos) & jnp.isfinite(loss_neg)
    valid = mask & finite
    delta = jnp.where(valid, loss_pos - loss_neg, 0.0)
    has_finished = jnp.cumsum(is_done.astype(jnp.int32), axis=0) > 0
    count = jnp.sum(valid, axis=0).astype(loss_pos.dtype)
    safe = jnp.maximum(count, 1.0)
    a = jnp.sum(jnp.where(has_finished, 0.0, delta), axis=0) / safe
    b = jnp.sum(jnp.where(has_finished, delta, 0.0), axis=0) / safe
    finished = has_finished[-1]

    acc = jax.tree_util.tree_map(jnp.add, accumulator, eps)
    scale = 1.0 / (2.0 * std**2)
    grads = jax.tree_util.tree_map(
        lambda c, e: (_scale_rows(a, c) + _scale_rows(b, e)) * scale, acc, eps
    )
    new_acc = jax.tree_util.tree_map(
        lambda e, c: jnp.where(jnp.reshape(finished, finished.shape + (1,) * (e.ndim - 1)), e, c),
        eps,
        acc,
    )
    total = jnp.sum(jnp.where(valid, loss_pos, 0.0) + jnp.where(valid, loss_neg, 0.0), axis=0)
    return PESOut(
        grads=grads,
        accumulator=new_acc,
        loss=total / (2.0 * safe),
        delta=jnp.sum(delta, axis=0) / safe,
        masked_nonfinite=jnp.sum(mask & ~finite, axis=0),
        finished=finished,
    )


def es_particles(eps, loss_pos, loss_neg, std: float, sign_delta_loss_scalar: float | None = None):
    """Antithetic ES for full unrolls: ``ĝ_i = Δ_i ε_i / (2σ²)``.

    Args:
      eps: perturbations, leading axis N.
      loss_pos, loss_neg: one normalised loss per particle ``[N]``.
      std: σ.
      sign_delta_loss_scalar: if set, ``Δ`` becomes ``sign(Δ) · c``.

    Returns:
      ``(grads, loss, delta)``: per-particle contributions, ``(L⁺ + L⁻)/2`` and
      ``Δ`` (non-finite differences are zeroed, as the reference does).
    """
    delta = jnp.nan_to_num(loss_pos - loss_neg, nan=0.0, posinf=0.0, neginf=0.0)
    if sign_delta_loss_scalar is not None:
        delta = jnp.sign(delta) * sign_delta_loss_scalar
    scale = 1.0 / (2.0 * std**2)
    grads = jax.tree_util.tree_map(lambda e: _scale_rows(delta, e) * scale, eps)
    return grads, (loss_pos + loss_neg) / 2.0, delta
