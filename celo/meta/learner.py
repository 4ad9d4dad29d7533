"""The outer update: aggregate the estimators, mask frozen leaves, apply AdamW (spec §10.7).

:class:`MetaLearner` is pure: ``step(state, data) -> (state, metrics)`` is one
outer iteration (every estimator's window, the aggregation and the AdamW
update) and is jitted once by the trainer, with the state donated.

Theta lives in the state as one flat float32 vector (``ravel_pytree`` order):
the perturbations, PES accumulators, gradients and AdamW moments are then
single arrays, which keeps the compiled program small. ``unravel`` gives the
optimizer's tree back (with the released files' sorted key order).

Frozen leaves (``--train_partial``) are handled two ways:

* ``freeze_exact=True`` (default): frozen leaves are neither perturbed nor
  updated; AdamW's weight decay does not touch them, so they stay
  bit-identical;
* ``freeze_exact=False``: the reference's behaviour (spec §4.9): every leaf is
  perturbed, the aggregated gradient is multiplied by a 0/1 mask, and AdamW
  (whose decoupled weight decay ignores the gradient) still shrinks frozen
  leaves by ``(1 − lr·wd)`` per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from celo.meta.estimators import AXIS

#: A NaN mean meta-loss is reported as this value (the reference's clip_nan_loss_to_value).
NAN_LOSS_VALUE = 20.0


@flax.struct.dataclass
class LearnerState:
    """Everything an outer iteration reads and writes (``theta`` is flat)."""

    theta: jnp.ndarray
    opt_state: Any
    estimator_states: tuple
    key: jax.Array
    iteration: jnp.ndarray


def outer_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW(lr, b1 0.9, b2 0.999, eps 1e-8, wd), with no clipping and no schedule."""
    return optax.adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True, eq=False)
class MetaLearner:
    """Gradient estimators over family groups plus the outer optimizer.

    Attributes:
      estimators: one estimator per family group.
      family_names: the family names of each group, in estimator order.
      unravel: flat vector → theta tree.
      outer_lr: AdamW learning rate.
      weight_decay: AdamW decoupled weight decay.
      mask: numpy bool vector over flat theta, False on frozen entries (None:
        everything is trained).
      freeze_exact: see the module docstring.
      mesh: a 1-D mesh over the particle axis, or None for one device.
    """

    estimators: tuple
    family_names: tuple
    unravel: Callable
    outer_lr: float
    weight_decay: float = 1e-4
    mask: np.ndarray | None = None
    freeze_exact: bool = True
    mesh: Mesh | None = None

    @property
    def flat_family_names(self) -> list[str]:
        return [n for names in self.family_names for n in names]

    def tx(self) -> optax.GradientTransformation:
        return outer_optimizer(self.outer_lr, self.weight_decay)

    def theta_tree(self, state: LearnerState) -> Any:
        """Theta in the optimizer's layout."""
        return self.unravel(state.theta)

    def init(self, theta: jnp.ndarray, key: jax.Array) -> LearnerState:
        """Fresh estimator states from a flat ``theta`` (jit it: it traces the task inits)."""
        key, *keys = jax.random.split(key, len(self.estimators) + 1)
        states = tuple(e.init(theta, k) for e, k in zip(self.estimators, keys))
        return LearnerState(
            theta=theta,
            opt_state=self.tx().init(theta),
            estimator_states=states,
            key=key,
            iteration=jnp.asarray(0, jnp.int32),
        )

    def shardings(self, state: LearnerState) -> LearnerState:
        """Placement: estimator states split along the particle axis, the rest replicated."""
        if self.mesh is None:
            device = jax.devices()[0]
            return jax.tree_util.tree_map(
                lambda _: jax.sharding.SingleDeviceSharding(device), state
            )
        rep = NamedSharding(self.mesh, P())
        part = NamedSharding(self.mesh, P(None, AXIS))
        est = jax.tree_util.tree_map(lambda _: part, state.estimator_states)
        out = jax.tree_util.tree_map(lambda _: rep, state)
        return out.replace(estimator_states=est)

    def step(self, state: LearnerState, data: Sequence[Any]) -> tuple[LearnerState, dict]:
        """One outer iteration."""
        key, *keys = jax.random.split(state.key, len(self.estimators) + 1)
        grads, losses, new_states, stats = [], [], [], []
        for est, est_state, k, d in zip(self.estimators, state.estimator_states, keys, data):
            g, loss, new_state, st = est.estimate(state.theta, est_state, k, d, self.mesh)
            grads.append(g)
            losses.append(loss)
            new_states.append(new_state)
            stats.append(st)

        num_families = sum(len(n) for n in self.family_names)
        grad = sum(jnp.sum(g, axis=0) for g in grads) / num_families
        family_loss = jnp.concatenate(losses)
        mean_loss = jnp.mean(family_loss)
        mean_loss = jnp.where(jnp.isnan(mean_loss), NAN_LOSS_VALUE, mean_loss)
        bad_grad = jnp.sum(~jnp.isfinite(grad))
        grad = jnp.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        frozen = self.mask is not None and not self.mask.all()
        if frozen and not self.freeze_exact:
            grad = grad * jnp.asarray(self.mask, grad.dtype)

        updates, opt_state = self.tx().update(grad, state.opt_state, state.theta)
        if frozen and self.freeze_exact:
            # Frozen entries: no step at all, so no weight decay either.
            updates = jnp.where(jnp.asarray(self.mask), updates, 0.0)
        theta = optax.apply_updates(state.theta, updates)

        metrics = {
            "meta_loss": mean_loss,
            "family_loss": family_loss,
            "grad_norm": jnp.linalg.norm(grad),
            "grad_mean_abs": jnp.mean(jnp.abs(grad)),
            "theta_norm": jnp.linalg.norm(theta),
            "update_norm": jnp.linalg.norm(updates),
            "nonfinite_grad_entries": bad_grad,
        }
        metrics.update(_merge_stats(stats))
        new = LearnerState(
            theta=theta,
            opt_state=opt_state,
            estimator_states=tuple(new_states),
            key=key,
            iteration=state.iteration + 1,
        )
        return new, metrics


def _merge_stats(stats: list[dict]) -> dict:
    """Scalars over all groups from per-particle ``[F, N]`` statistics."""
    out = {}
    cat = lambda k: jnp.concatenate([jnp.ravel(s[k]) for s in stats if k in s])
    out["delta_loss_abs_mean"] = jnp.mean(jnp.abs(cat("delta_loss")))
    for k in ("masked_nonfinite", "nonfinite_inner_losses", "resets"):
        if all(k in s for s in stats):
            out[k] = jnp.sum(cat(k))
    if any("lr_mult" in s for s in stats):
        lr = cat("lr_mult")
        out["lr_mult_mean"] = jnp.mean(lr)
        out["lr_mult_min"] = jnp.min(lr)
        out["lr_mult_max"] = jnp.max(lr)
    return out
