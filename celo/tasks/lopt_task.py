"""Training a learned optimizer as a task (learned_optimization ``tasks/fixed/lopt.py``).

The parameters are a learned optimizer's theta; the loss is the mean
normalised training loss of an inner task over a full unroll of ``num_steps``
updates made by that optimizer. One "batch" is the ``num_steps`` inner
batches of the unroll, stacked along a leading axis.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from celo.tasks.base import DataSpec, Task


def unrolled_loss(task: Task, opt: Any, key: jax.Array, datas: Any, num_steps: int) -> jnp.ndarray:
    """Mean normalised loss of ``num_steps`` updates of ``opt`` on ``task``.

    Args:
      task: the inner task.
      opt: an optimizer with the lopt-style face (``init``/``update``/``get_params_state``).
      key: randomness for the inner init and the losses.
      datas: inner batches stacked along a leading axis of length ``num_steps``.
      num_steps: unroll length (also the horizon handed to ``opt.init``).
    """
    key, key1 = jax.random.split(key)
    params, state = task.init_with_state(key1)
    opt_state = opt.init(params, state, num_steps=num_steps)

    # The reference wraps the step in jax.remat. The inner problem is tiny, so
    # storing the 50 steps costs little memory, while remat made the theta
    # gradient ~5x slower to compile (176 s against 33 s on CPU).
    def step(carry, batch):
        opt_state, key = carry
        params, state = opt.get_params_state(opt_state)
        key, key1, key2 = jax.random.split(key, 3)
        (loss, state), grad = jax.value_and_grad(task.loss_with_state, has_aux=True)(
            params, state, key1, batch
        )
        opt_state = opt.update(opt_state, grad, loss=loss, model_state=state, key=key2)
        return (opt_state, key), loss

    key, key1 = jax.random.split(key)
    _, losses = jax.lax.scan(step, (opt_state, key1), datas, length=num_steps)
    return jnp.mean(jax.vmap(task.normalizer)(losses))


class LOptTask(Task):
    """Meta-train ``lopt`` on ``task`` through full ``num_steps``-step unrolls."""

    def __init__(self, task: Task, lopt: Any, num_steps: int = 10, *, name: str | None = None):
        self.task = task
        self.lopt = lopt
        self.num_steps = int(num_steps)
        self._name = name
        if task.abstract_batch is not None:
            abstract = {
                k: jax.ShapeDtypeStruct((self.num_steps, *v.shape), v.dtype)
                for k, v in task.abstract_batch.items()
            }
            self._data = DataSpec(abstract, self._make_datasets)

    def _make_datasets(self):
        base = importlib.import_module("celo.data.base")
        inner = self.task.datasets

        def stacked(split: str):
            it = inner.split(split)
            while True:
                batches = [next(it) for _ in range(self.num_steps)]
                yield {k: np.stack([b[k] for b in batches]) for k in batches[0]}

        return base.Datasets(
            *(stacked(s) for s in ("train", "inner_valid", "outer_valid", "test")),
            extra_info=dict(inner.extra_info),
            abstract_batch=dict(self.abstract_batch),
        )

    def init(self, key: jax.Array) -> Any:
        return self.lopt.init(key)

    def loss(self, params: Any, key: jax.Array, data: Any) -> jnp.ndarray:
        opt = self.lopt.opt_fn(params)
        return unrolled_loss(self.task, opt, key, data, self.num_steps)

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        return self.task.normalizer(loss)


def LOpt_AdafacMLPLOpt_FashionMnist_50(
    *, data_dir: str | Path | None = None, seed: int = 0
) -> Task:
    """AdaFac-MLP-LOpt meta-trained over 50-step unrolls of ``ImageMLP_FashionMnist8_Relu32``."""
    # Imported here: the optimizers sit downstream of tasks, and only this task needs one.
    from celo.factory import get_optimizer
    from celo.tasks.image_mlp import ImageMLP_FashionMnist8_Relu32

    inner = ImageMLP_FashionMnist8_Relu32(data_dir=data_dir, seed=seed)
    return LOptTask(
        inner, get_optimizer("adafac_mlp"), 50, name="LOpt_AdafacMLPLOpt_FashionMnist_50"
    )


FACTORIES = {"LOpt_AdafacMLPLOpt_FashionMnist_50": LOpt_AdafacMLPLOpt_FashionMnist_50}
