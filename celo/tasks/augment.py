"""Task augmentation by weight reparameterisation (spec §10.8).

``ReparamWeights(task, s)`` starts from ``w₀ / s`` and evaluates the wrapped
loss at ``w ⊙ s``: the function is unchanged, but in w-space the gradient is
``s ⊙ ∇f(w ⊙ s)``, so an optimizer sees parameters scaled by 1/s and
gradients by s. Meta-training on such tasks teaches scale invariance.

The families draw s log-uniformly in ``sample`` (which runs under ``vmap``
at every inner-problem reset), so every new inner trajectory gets fresh
scales that stay fixed along it. All randomness is JAX randomness from the
sampling key: unlike the reference's ``ReparamWeightsListFamily``, which drew
the range with host numpy at trace time (frozen per compilation, §15.1 item 5),
the range here varies from call to call of one compiled function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from celo.tasks.base import Task, TaskFamily

LEVELS = ("global", "tensor", "parameter", "none")


def log_uniform(key: jax.Array, shape, lo, hi) -> jnp.ndarray:
    """``exp(U[ln lo, ln hi])`` elementwise."""
    u = jax.random.uniform(key, shape, minval=jnp.log(lo), maxval=jnp.log(hi))
    return jnp.exp(u)


class ReparamWeights(Task):
    """Reparameterise a task's weights by ``param_scale`` (a scalar or a params-shaped pytree)."""

    def __init__(self, task: Task, param_scale: Any):
        self.task = task
        self._param_scale = param_scale
        self._name = f"ReparamWeights_{task.name}"

    @property
    def datasets(self) -> Any:
        return self.task.datasets

    @property
    def abstract_batch(self):
        return self.task.abstract_batch

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        return self.task.normalizer(loss)

    def scales(self, params: Any) -> Any:
        """The scale pytree matched to ``params`` (a scalar is broadcast to every leaf)."""
        scale = self._param_scale
        if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(scale)):
            return jax.tree_util.tree_map(lambda _: scale, params)
        want, got = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(scale)
        if want != got:
            raise ValueError(f"param_scale structure {got} does not match the params {want}")
        return scale

    def init_with_state(self, key: jax.Array):
        params, state = self.task.init_with_state(key)
        params = jax.tree_util.tree_map(lambda p, s: p / s, params, self.scales(params))
        return params, state

    def init(self, key: jax.Array):
        return self.init_with_state(key)[0]

    def loss_with_state_and_aux(self, params, state, key, data):
        params = jax.tree_util.tree_map(lambda p, s: p * s, params, self.scales(params))
        return self.task.loss_with_state_and_aux(params, state, key, data)

    def loss(self, params, key, data):
        return self.loss_with_state_and_aux(params, None, key, data)[0]

    def loss_and_aux(self, params, key, data):
        loss, _, aux = self.loss_with_state_and_aux(params, None, key, data)
        return loss, aux


class _ReparamFamilyBase(TaskFamily):
    def __init__(self, task_family: TaskFamily):
        self.task_family = task_family
        self._abstract = None

    @property
    def datasets(self) -> Any:
        return self.task_family.datasets

    def abstract_params(self) -> Any:
        """Shapes of the wrapped family's params (traced once, without data)."""
        if self._abstract is None:

            def init(key):
                return self.task_family.sample_task(key).init_with_state(key)[0]

            self._abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
        return self._abstract

    def _leaf_keys(self, key: jax.Array) -> Any:
        leaves, tree = jax.tree_util.tree_flatten(self.abstract_params())
        return jax.tree_util.tree_unflatten(tree, list(jax.random.split(key, len(leaves))))


class ReparamWeightsFamily(_ReparamFamilyBase):
    """Fresh log-uniform scales for every sampled task, at one granularity.

    Args:
      task_family: the family to wrap.
      level: "global" (one scalar), "tensor" (one scalar per leaf) or
        "parameter" (elementwise; the configuration stores one key per leaf
        and ``task_fn`` regenerates the scales from it).
      param_scale_range: (lo, hi) of the log-uniform draw.
    """

    def __init__(
        self,
        task_family: TaskFamily,
        level: str,
        param_scale_range: tuple[float, float] = (0.01, 100.0),
    ):
        if level not in LEVELS[:3]:
            raise ValueError(f"level must be one of {LEVELS[:3]}, not {level!r}")
        super().__init__(task_family)
        self.level = level
        self.param_scale_range = tuple(float(x) for x in param_scale_range)
        self._name = f"ReparamWeights{level}_{task_family.name}"

    def sample(self, key: jax.Array) -> dict:
        key1, key2 = jax.random.split(key)
        cfg = {"sub_cfg": self.task_family.sample(key1)}
        lo, hi = self.param_scale_range
        if self.level == "global":
            cfg["param_scale"] = log_uniform(key2, (), lo, hi)
        elif self.level == "tensor":
            cfg["param_scale"] = jax.tree_util.tree_map(
                lambda k: log_uniform(k, (), lo, hi), self._leaf_keys(key2)
            )
        else:
            cfg["param_scale_keys"] = self._leaf_keys(key2)
        return cfg

    def task_fn(self, cfg: dict) -> Task:
        task = self.task_family.task_fn(cfg["sub_cfg"])
        if self.level == "parameter":
            lo, hi = self.param_scale_range
            scale = jax.tree_util.tree_map(
                lambda p, k: log_uniform(k, p.shape, lo, hi),
                self.abstract_params(),
                cfg["param_scale_keys"],
            )
        else:
            scale = cfg["param_scale"]
        return ReparamWeights(task, scale)


class ReparamWeightsListFamily(_ReparamFamilyBase):
    """Sample the level (duplicates act as weights) and the range for each task.

    Args:
      task_family: the family to wrap.
      levels: entries of "global", "tensor", "parameter", "none"; the level is
        drawn uniformly from this list, so a level listed twice is twice as likely.
      param_scale_ranges: (lo, hi) ranges, one drawn uniformly per task.
    """

    def __init__(
        self,
        task_family: TaskFamily,
        levels: Sequence[str] = ("global", "tensor", "parameter", "none"),
        param_scale_ranges: Sequence[tuple[float, float]] = ((1e-3, 1e3), (1e-2, 1e2), (1e-1, 1e1)),
    ):
        bad = [lvl for lvl in levels if lvl not in LEVELS]
        if bad or not levels:
            raise ValueError(f"levels must be a non-empty list of {LEVELS}; got {list(levels)}")
        super().__init__(task_family)
        self.levels = tuple(levels)
        self._level_ids = jnp.asarray([LEVELS.index(lvl) for lvl in levels], jnp.int32)
        self.param_scale_ranges = np.asarray(param_scale_ranges, np.float32).reshape(-1, 2)
        self._name = f"ReparamWeightsList_{task_family.name}"

    def sample(self, key: jax.Array) -> dict:
        key1, key_level, key_range, key_scale = jax.random.split(key, 4)
        ranges = jnp.asarray(self.param_scale_ranges)
        return {
            "sub_cfg": self.task_family.sample(key1),
            "level": jax.random.choice(key_level, self._level_ids),
            "param_scale_range": ranges[jax.random.randint(key_range, (), 0, len(ranges))],
            "key": key_scale,
        }

    def task_fn(self, cfg: dict) -> Task:
        task = self.task_family.task_fn(cfg["sub_cfg"])
        abstract = self.abstract_params()
        lo, hi = cfg["param_scale_range"][0], cfg["param_scale_range"][1]

        # Every branch returns full-shape scales so lax.switch sees one output type.
        def global_(key):
            s = log_uniform(key, (), lo, hi)
            return jax.tree_util.tree_map(lambda p: jnp.full(p.shape, s), abstract)

        def tensor(key):
            return jax.tree_util.tree_map(
                lambda p, k: jnp.full(p.shape, log_uniform(k, (), lo, hi)),
                abstract,
                self._leaf_keys(key),
            )

        def parameter(key):
            return jax.tree_util.tree_map(
                lambda p, k: log_uniform(k, p.shape, lo, hi), abstract, self._leaf_keys(key)
            )

        def none(key):
            del key
            return jax.tree_util.tree_map(lambda p: jnp.ones(p.shape), abstract)

        scale = jax.lax.switch(cfg["level"], [global_, tensor, parameter, none], cfg["key"])
        return ReparamWeights(task, scale)
