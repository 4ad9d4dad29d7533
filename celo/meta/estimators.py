"""Gradient estimators over one family group: truncated PES and FullES.

An estimator owns a :class:`~celo.meta.truncated_step.VectorizedTruncatedStep`
and turns a theta into a gradient estimate per task family. Its state (inner
problems, PES accumulators) has leading axes ``[F, N, …]``: the particle axis
``N`` is what multi-device runs shard.

``estimate`` draws every random number from keys split *before* the particles
are sharded, and gathers the per-particle contributions back before reducing
them, so a run on D devices computes the same numbers as a run on one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from celo.meta import batches, pes
from celo.meta.truncated_step import UnrollState, VectorizedTruncatedStep
from celo.optimizers.celo import Celo
from celo.optimizers.celo_adam import CeloAdam

AXIS = "particles"


@flax.struct.dataclass
class PESState:
    """Inner problems ``[F, N, 2]`` and flat PES accumulators ``[F, N, D]``."""

    inner: UnrollState
    accumulator: Any


@flax.struct.dataclass
class EmptyState:
    """FullES keeps nothing between outer iterations."""


def _gather(x: jnp.ndarray, mesh: Mesh | None) -> jnp.ndarray:
    """All particles on every device (axis 1 is the particle axis)."""
    if mesh is None:
        return x
    return jax.lax.all_gather(x, AXIS, axis=1, tiled=True)


def _lr_mult(lopt, theta, opt_state, loss) -> jnp.ndarray:
    """The scheduler's next ``lr_mult`` for one problem (Celo and Celo-Adam)."""
    _, _, lr_mult, _ = lopt.scheduler_step(theta, opt_state, loss)
    return jnp.mean(lr_mult)


@dataclasses.dataclass(frozen=True, eq=False)
class _Estimator:
    """Shared plumbing: keys, sharding and the per-family reduction.

    Theta enters ``estimate`` as a flat vector of size ``D``; ``unravel``
    turns it back into the optimizer's tree and ``mask`` (a numpy bool
    vector, or None) marks the entries that may be perturbed.
    """

    step: VectorizedTruncatedStep
    unravel: Callable
    num_families: int
    num_particles: int
    std: float = 0.01
    steps_per_jit: int = 10
    mask: np.ndarray | None = None

    def _keys(self, key: jax.Array, n: int) -> jax.Array:
        keys = jax.random.split(key, self.num_families * self.num_particles * n)
        return jnp.reshape(keys, (n, self.num_families, self.num_particles) + keys.shape[1:])

    def _eps(self, theta, keys):
        one = lambda k: pes.sample_perturbation(theta.shape[0], k, self.std, self.mask)
        return jax.vmap(jax.vmap(one))(keys)

    def _trees(self, flat):
        """Unflatten ``[..., D]`` into theta trees with the same leading axes."""
        lead = flat.shape[:-1]
        fn = self.unravel
        for _ in lead:
            fn = jax.vmap(fn)
        return fn(flat)

    def _shard(self, fn, mesh: Mesh | None, in_specs, out_specs):
        if mesh is None:
            return fn
        # The replicated outputs come from all_gather + mean, which the
        # replication checker cannot see through.
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def _reduce(self, grads, loss, stats, mesh):
        """Gather per-particle values ``[F, n]`` and average them over particles."""
        grads = jnp.mean(_gather(grads, mesh), axis=1)
        stats = {k: _gather(v, mesh) for k, v in stats.items()}
        return grads, jnp.mean(_gather(loss, mesh), axis=1), stats


@dataclasses.dataclass(frozen=True, eq=False)
class TruncatedPES(_Estimator):
    """Persistent evolution strategies over truncation windows (spec §10.6).

    One window is ``trunc_length / steps_per_jit`` chunks (an outer
    ``lax.scan``) of ``steps_per_jit`` steps (an inner ``lax.scan``), all inside
    the one compiled outer iteration. The reference calls a compiled chunk from
    the host so it can feed each chunk's batches; with the data on the device
    that round trip is unnecessary, and the chunking only shapes the loops.

    Attributes (beyond the shared ones):
      trunc_length: steps per window ``K`` (a multiple of ``steps_per_jit``).
    """

    trunc_length: int = 50

    def init(self, theta, key: jax.Array) -> PESState:
        keys = self._keys(key, 1)[0]
        inner = self.step.init(self.unravel(theta), keys)
        acc = jnp.zeros((self.num_families, self.num_particles) + theta.shape, theta.dtype)
        return PESState(inner=inner, accumulator=acc)

    def estimate(self, theta, state: PESState, key, data, mesh: Mesh | None = None):
        """Per-family gradient ``[F, D]``, per-family loss ``[F]``, new state, stats."""
        eps_keys, window_keys = self._keys(key, 2)
        local = lambda *a: self._local(*a, mesh=mesh)
        part = P(None, AXIS)
        fn = self._shard(
            local,
            mesh,
            in_specs=(P(), PESState(inner=part, accumulator=part), part, part, P()),
            out_specs=(P(), P(), PESState(inner=part, accumulator=part), P()),
        )
        return fn(theta, state, eps_keys, window_keys, data)

    def _local(self, theta, state, eps_keys, window_keys, data, *, mesh):
        eps = self._eps(theta, eps_keys)
        theta_pm = self._trees(pes.antithetic(theta, eps))
        chunks = self.trunc_length // self.steps_per_jit

        def chunk(inner, c):
            return self.step.unroll(
                theta_pm, inner, window_keys, data, self.steps_per_jit, t0=c * self.steps_per_jit
            )

        inner, outs = jax.lax.scan(chunk, state.inner, jnp.arange(chunks, dtype=jnp.int32))
        outs = jax.tree_util.tree_map(
            lambda x: jnp.reshape(x, (x.shape[0] * x.shape[1],) + x.shape[2:]), outs
        )
        # outs: [K, F, n, 2]; PES per family (vmap over F, time stays axis 0).
        window = jax.vmap(pes.pes_window, in_axes=(0, 0, 1, 1, 1, 1, None))
        res = window(
            eps,
            state.accumulator,
            outs.loss[..., 0],
            outs.loss[..., 1],
            outs.is_done[..., 0],
            outs.mask[..., 0],
            self.std,
        )
        raw_bad = jnp.sum(outs.mask & ~jnp.isfinite(outs.raw_loss), axis=(0, 3))
        stats = {
            "delta_loss": res.delta,
            "masked_nonfinite": res.masked_nonfinite,
            "nonfinite_inner_losses": raw_bad,
            "resets": jnp.sum(outs.is_done[..., 0], axis=0),
        }
        if isinstance(self.step.lopt, (Celo, CeloAdam)):
            # The lr_mult the scheduler would apply next, on the + copies, given
            # the last raw loss of the window (unperturbed theta).
            pos = jax.tree_util.tree_map(lambda x: x[:, :, 0], inner.opt_state)
            tree = self.unravel(theta)
            lr = jax.vmap(jax.vmap(lambda s, l: _lr_mult(self.step.lopt, tree, s, l)))
            stats["lr_mult"] = lr(pos, outs.raw_loss[-1, ..., 0])
        grads, loss, stats = self._reduce(res.grads, res.loss, stats, mesh)
        return grads, loss, PESState(inner=inner, accumulator=res.accumulator), stats


@dataclasses.dataclass(frozen=True, eq=False)
class FullES(_Estimator):
    """Antithetic ES over whole trajectories (spec §10.10).

    Every outer iteration draws one horizon ``L`` from ``horizon`` (rounded
    up to a multiple of ``steps_per_jit``), starts fresh problems for both
    signs and unrolls them to the end (the step's schedule must never end).

    Attributes (beyond the shared ones):
      horizon: schedule whose ``init`` draws ``L``.
      loss_type: "avg" (mean normalised training loss over the unroll) or
        "last_recompute" (the loss of the final parameters, averaged over
        ``recompute_samples`` fresh batches, then normalised).
      recompute_samples: batches for "last_recompute".
      sign_delta_loss_scalar: if set, ``Δ → sign(Δ)·c``.
    """

    horizon: Any = None
    loss_type: str = "avg"
    recompute_samples: int = 50
    sign_delta_loss_scalar: float | None = None

    def init(self, theta, key: jax.Array) -> EmptyState:
        del theta, key
        return EmptyState()

    def estimate(self, theta, state, key, data, mesh: Mesh | None = None):
        k_len, k_rest = jax.random.split(key)
        length = self.horizon.init(k_len)
        length = (length + self.steps_per_jit - 1) // self.steps_per_jit * self.steps_per_jit
        eps_keys, init_keys, window_keys, eval_keys = self._keys(k_rest, 4)
        local = lambda *a: self._local(*a, mesh=mesh)
        part = P(None, AXIS)
        fn = self._shard(
            local,
            mesh,
            in_specs=(P(), P(), part, part, part, part, P()),
            out_specs=(P(), P(), P()),
        )
        grads, loss, stats = fn(theta, length, eps_keys, init_keys, window_keys, eval_keys, data)
        return grads, loss, state, stats

    def _local(self, theta, length, eps_keys, init_keys, window_keys, eval_keys, data, *, mesh):
        eps = self._eps(theta, eps_keys)
        theta_pm = self._trees(pes.antithetic(theta, eps))
        init_one = lambda th, k: self.step.init_problem(th, k, length)
        inner = jax.vmap(jax.vmap(jax.vmap(init_one, in_axes=(0, None))))(theta_pm, init_keys)
        zeros = jnp.zeros(eps_keys.shape[:2] + (2,), jnp.float32)

        def cond(carry):
            return carry[0] * self.steps_per_jit < length

        def body(carry):
            c, inner, total, count = carry
            inner, outs = self.step.unroll(
                theta_pm, inner, window_keys, data, self.steps_per_jit, t0=c * self.steps_per_jit
            )
            total = total + jnp.sum(jnp.where(outs.mask, outs.loss, 0.0), axis=0)
            count = count + jnp.sum(outs.mask, axis=0)
            return c + 1, inner, total, count

        _, inner, total, count = jax.lax.while_loop(
            cond, body, (jnp.asarray(0, jnp.int32), inner, zeros, zeros)
        )
        if self.loss_type == "avg":
            losses = total / jnp.maximum(count, 1.0)
        elif self.loss_type == "last_recompute":
            losses = self._recompute(theta_pm, inner, eval_keys, data)
        else:
            raise ValueError(f"loss_type must be 'avg' or 'last_recompute', not {self.loss_type!r}")
        grads, loss, delta = pes.es_particles(
            eps, losses[..., 0], losses[..., 1], self.std, self.sign_delta_loss_scalar
        )
        stats = {"delta_loss": delta}
        grads, loss, stats = self._reduce(grads, loss, stats, mesh)
        return grads, loss, stats

    def _recompute(self, theta_pm, inner, eval_keys, data):
        """Mean loss of the final parameters over fresh batches, normalised ``[F, n, 2]``."""
        step = self.step
        keys = jax.vmap(jax.vmap(lambda k: jax.random.split(k, self.recompute_samples)))(eval_keys)

        def one_problem(theta, state, ks, batch):
            opt = step.lopt.opt_fn(theta)
            params, model_state = opt.get_params(state.opt_state), opt.get_state(state.opt_state)
            task = step.family.task_fn(state.task_param)

            def loss_at(k, b):
                return task.loss_with_state_and_aux(params, model_state, k, b)[0]

            values = jax.vmap(loss_at)(ks, batch)
            return task.normalizer(jnp.mean(values))

        batch = None
        if data is not None:
            flat = jnp.reshape(keys, (keys.shape[0], -1) + keys.shape[3:])
            batch = batches.sample_batches(data, flat)
            batch = jax.tree_util.tree_map(
                lambda x: jnp.reshape(x, keys.shape[:3] + x.shape[2:]), batch
            )
        per_sign = jax.vmap(one_problem, in_axes=(0, 0, None, None))
        return jax.vmap(jax.vmap(per_sign))(theta_pm, inner, keys, batch)
