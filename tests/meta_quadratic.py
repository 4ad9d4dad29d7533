"""A 2-D quadratic task family and a two-parameter learned optimizer for meta tests.

``f(x) = ½ Σ a_k x_k²`` with ``a`` log-uniform in [0.5, 2] and ``x₀ ~ N(0, I)``
drawn per task; the optimizer is SGD with momentum whose log learning rate and
momentum are theta. Everything is small enough that thousands of particles
run in milliseconds, and the full-unroll meta-loss has an exact ``jax.grad``.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp

from celo.optimizers.base import LearnedOptimizer
from celo.tasks.base import Task, TaskFamily


class QuadraticTask(Task):
    """``½ Σ a x²`` starting from ``x0`` (both from the configuration)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._name = "Quadratic2D"

    def init(self, key):
        del key
        return {"x": self.cfg["x0"]}

    def loss(self, params, key, data):
        del key, data
        return 0.5 * jnp.sum(self.cfg["a"] * params["x"] ** 2)


class QuadraticFamily(TaskFamily):
    """Random 2-D quadratics; ``fixed=True`` always yields the same one."""

    def __init__(self, fixed: bool = False):
        self.fixed = fixed
        self._name = "Quadratic2DFamily"

    def sample(self, key):
        if self.fixed:
            return {"a": jnp.asarray([1.5, 0.7]), "x0": jnp.asarray([1.0, -0.8])}
        k1, k2 = jax.random.split(key)
        a = jnp.exp(jax.random.uniform(k1, (2,), minval=jnp.log(0.5), maxval=jnp.log(2.0)))
        return {"a": a, "x0": jax.random.normal(k2, (2,))}

    def task_fn(self, cfg):
        return QuadraticTask(cfg)


@flax.struct.dataclass
class SGDMState:
    params: dict
    state: None
    velocity: dict
    iteration: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class LearnedSGDM(LearnedOptimizer):
    """``v ← β v + g``, ``p ← p − exp(log_lr) v``; theta = {log_lr, momentum}."""

    def init(self, key):
        del key
        return {"log_lr": jnp.asarray(jnp.log(0.1)), "momentum": jnp.asarray(0.5)}

    def init_state(self, theta, params, model_state, num_steps, key):
        del theta, num_steps, key
        return SGDMState(
            params,
            model_state,
            jax.tree_util.tree_map(jnp.zeros_like, params),
            jnp.asarray(0, jnp.int32),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        v = jax.tree_util.tree_map(lambda v, g: theta["momentum"] * v + g, state.velocity, grad)
        p = jax.tree_util.tree_map(lambda p, v: p - jnp.exp(theta["log_lr"]) * v, state.params, v)
        return SGDMState(p, model_state, v, state.iteration + 1)


def full_unroll_meta_loss(theta, cfg, steps: int):
    """Mean over ``steps`` updates of the loss *before* each update (the PES objective)."""
    task, lopt = QuadraticTask(cfg), LearnedSGDM()
    state = lopt.init_state(theta, task.init(None), None, steps, None)

    def body(state, _):
        loss, grad = jax.value_and_grad(task.loss)(state.params, None, None)
        return lopt.update_state(theta, state, grad, loss, None, False, None), loss

    _, losses = jax.lax.scan(body, state, None, length=steps)
    return jnp.mean(losses)
