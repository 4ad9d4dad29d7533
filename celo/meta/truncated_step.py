"""A vectorised unroll of many inner problems (spec §10.4).

Every inner problem has its own task sample, optimizer state, step counter and
horizon. Problems are laid out ``[F, N, 2]``: task families of one group ×
particles × antithetic signs. The two signs of a particle share every key and
every batch (common random numbers), so they reset in lock-step; only their
meta-parameters differ.

One step of one problem (the reference's order):

* not done: ``(ℓ, s), g = value_and_grad(loss_with_state)(params, …, batch)``,
  ``opt.update(state, g, loss=ℓ)``, ``inner_step += 1``; it emits the
  *normalised* ℓ (the loss before the update) with mask 1;
* done: a new task is sampled (fresh augmentation), new params, and
  ``opt.init(..., num_steps=<horizon already re-drawn>)``, ``inner_step = 0``;
  it emits loss 0 with mask 0;
* then the schedule sets ``is_done = inner_step >= horizon`` (re-drawing the
  horizon when it fires).

Under ``vmap`` a per-problem ``lax.cond`` runs both branches, so the reset (a
full task and optimizer initialisation) would cost as much as a step on every
step. Here the training step runs for every problem and the reset runs, for
the whole batch, only on steps where at least one problem is done (a
``lax.cond`` on ``any(is_done)``, about one step in ten for 64 problems with
horizons of 100–2000), then a select keeps the reset states where needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from celo.meta import batches
from celo.meta.schedules import TruncationSchedule
from celo.optimizers.base import LearnedOptimizer, match_type
from celo.tasks.base import TaskFamily


@flax.struct.dataclass
class UnrollState:
    """One inner problem (leading axes ``[F, N, 2]`` when vectorised)."""

    opt_state: Any
    task_param: Any
    inner_step: jnp.ndarray
    length: jnp.ndarray
    is_done: jnp.ndarray


@flax.struct.dataclass
class UnrollOut:
    """Per-step outputs; after :meth:`VectorizedTruncatedStep.unroll` the axes
    are ``[T, F, N, 2]``.

    Attributes:
      loss: normalised training loss before the update; 0 on a reset step.
      raw_loss: the same loss before the normaliser (0 on a reset step).
      mask: False on reset steps.
      is_done: the trajectory finished with this step.
    """

    loss: jnp.ndarray
    raw_loss: jnp.ndarray
    mask: jnp.ndarray
    is_done: jnp.ndarray


def tree_where(cond: jnp.ndarray, a: Any, b: Any) -> Any:
    """``where(cond, a, b)`` leaf-wise; ``cond`` broadcasts over trailing axes."""

    def pick(x, y):
        c = jnp.reshape(cond, cond.shape + (1,) * (x.ndim - cond.ndim))
        return jnp.where(c, x, y)

    return jax.tree_util.tree_map(pick, a, b)


def _flat(x: jnp.ndarray) -> jnp.ndarray:
    # Explicit sizes: some optimizer-state leaves are empty, and -1 cannot be inferred for them.
    return jnp.reshape(x, (x.shape[0] * x.shape[1],) + x.shape[2:])


@dataclasses.dataclass(frozen=True, eq=False)
class VectorizedTruncatedStep:
    """Unroll inner problems of one family group with a learned optimizer.

    Instances are static under ``jit`` (hashed by identity).

    Attributes:
      family: the family whose code every problem of the group runs; families
        of a group differ only in their data (see :func:`group_families`).
      lopt: the learned optimizer being meta-trained.
      schedule: truncation schedule (horizons and when to reset).
      random_initial_iteration_offset: if > 0, the first trajectory of every
        problem starts with ``inner_step ~ U[0, offset)`` (the optimizer's own
        iteration stays 0), which staggers the resets.
    """

    family: TaskFamily
    lopt: LearnedOptimizer
    schedule: TruncationSchedule
    random_initial_iteration_offset: int = 0

    # -- one problem ------------------------------------------------------------
    def _fresh(self, theta, key, length) -> tuple[Any, Any]:
        k_task, k_init, k_opt = jax.random.split(key, 3)
        task_param = self.family.sample(k_task)
        params, model_state = self.family.task_fn(task_param).init_with_state(k_init)
        opt_state = self.lopt.init_state(theta, params, model_state, length, k_opt)
        return opt_state, task_param

    def init_problem(self, theta, key: jax.Array, length=None) -> UnrollState:
        """A new problem; ``length`` overrides the schedule's first horizon."""
        k_len, k_fresh, k_off = jax.random.split(key, 3)
        if length is None:
            length = self.schedule.init(k_len)
        length = jnp.asarray(length, jnp.int32)
        opt_state, task_param = self._fresh(theta, k_fresh, length)
        step = jnp.asarray(0, jnp.int32)
        if self.random_initial_iteration_offset > 0:
            step = jax.random.randint(k_off, (), 0, self.random_initial_iteration_offset)
        return UnrollState(
            opt_state=opt_state,
            task_param=task_param,
            inner_step=step.astype(jnp.int32),
            length=length,
            is_done=jnp.asarray(False),
        )

    def _train(self, theta, state: UnrollState, key, batch):
        k_loss, k_opt = jax.random.split(key)
        opt = self.lopt.opt_fn(theta)
        params, model_state = opt.get_params(state.opt_state), opt.get_state(state.opt_state)
        task = self.family.task_fn(state.task_param)

        def loss_fn(p):
            loss, new_model_state, _ = task.loss_with_state_and_aux(p, model_state, k_loss, batch)
            return loss, new_model_state

        (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_opt = self.lopt.update_state(
            theta, state.opt_state, grad, loss, new_model_state, jnp.asarray(False), k_opt
        )
        return match_type(new_opt, state.opt_state), loss, task.normalizer(loss)

    def _reset(self, theta, key, length, old: UnrollState) -> UnrollState:
        opt_state, task_param = self._fresh(theta, key, length)
        new = old.replace(
            opt_state=opt_state, task_param=task_param, inner_step=jnp.zeros_like(old.inner_step)
        )
        return match_type(new, old)

    # -- vectorised ---------------------------------------------------------------
    def init(self, theta, keys: jax.Array, length=None) -> UnrollState:
        """States ``[F, N, 2]`` from keys ``[F, N]``, built from the unperturbed theta."""
        one = lambda k: self.init_problem(theta, k, length)
        state = jax.vmap(jax.vmap(one))(keys)
        return jax.tree_util.tree_map(lambda x: jnp.stack([x, x], axis=2), state)

    def step(self, theta_pm, state: UnrollState, keys, batch) -> tuple[UnrollState, UnrollOut]:
        """One step of every problem.

        Args:
          theta_pm: meta-parameters per problem, leading axes ``[F, N, 2]``.
          state: problem states ``[F, N, 2]``.
          keys: ``[F, N, 3]`` keys of this step (train, reset, schedule), shared
            by the two signs.
          batch: this step's batch per particle ``[F, N, B, ...]`` (or None).
        """
        f, n = keys.shape[:2]
        theta_p = jax.tree_util.tree_map(_flat, theta_pm)
        state_p = jax.tree_util.tree_map(_flat, state)
        batch_p = None if batch is None else jax.tree_util.tree_map(_flat, batch)
        keys = _flat(keys)
        k_train, k_reset, k_sched = keys[:, 0], keys[:, 1], keys[:, 2]

        # Outer vmap over problems, inner over the two signs: keys and the
        # batch are broadcast to both signs, never copied.
        train = jax.vmap(jax.vmap(self._train, in_axes=(0, 0, None, None)))
        new_opt, raw, norm = train(theta_p, state_p, k_train, batch_p)
        was_done = state_p.is_done
        trained = state_p.replace(opt_state=new_opt, inner_step=state_p.inner_step + 1)

        def reset(trained):
            fresh = jax.vmap(jax.vmap(self._reset, in_axes=(0, None, 0, 0)))(
                theta_p, k_reset, state_p.length, trained
            )
            return tree_where(was_done, fresh, trained)

        new = jax.lax.cond(jnp.any(was_done), reset, lambda s: s, trained)
        sched = jax.vmap(jax.vmap(self.schedule.next, in_axes=(0, 0, None)))
        done, length = sched(new.length, new.inner_step, k_sched)
        new = new.replace(is_done=done, length=length.astype(jnp.int32))

        out = UnrollOut(
            loss=jnp.where(was_done, 0.0, norm),
            raw_loss=jnp.where(was_done, 0.0, raw),
            mask=~was_done,
            is_done=done,
        )
        unflat = lambda x: jnp.reshape(x, (f, n) + x.shape[1:])
        return (jax.tree_util.tree_map(unflat, new), jax.tree_util.tree_map(unflat, out))

    def unroll(self, theta_pm, state, keys, data, num_steps: int, t0=0):
        """``num_steps`` steps in one ``lax.scan``; outputs ``[num_steps, F, N, 2]``.

        ``keys`` are the ``[F, N]`` window keys and ``t0`` the position of the
        first step in the window: all the steps' keys and batch indices are
        drawn up front, so the scanned body holds no key arithmetic.
        """

        def draw(key):
            # One split for everything: every threefry call is a loop XLA compiles separately.
            ks = jax.random.split(jax.random.fold_in(key, t0), num_steps * 3 + 1)
            return ks[:-1], ks[-1]

        step_keys, data_keys = jax.vmap(jax.vmap(draw))(keys)
        step_keys = jnp.reshape(step_keys, keys.shape[:2] + (num_steps, 3) + step_keys.shape[3:])
        step_keys = jnp.moveaxis(step_keys, 2, 0)  # [T, F, N, 3, ...]
        idx = batches.batch_indices(data, data_keys, num_steps)

        def body(carry, xs):
            k, i = xs
            return self.step(theta_pm, carry, k, batches.gather(data, i))

        return jax.lax.scan(body, state, (step_keys, idx))
