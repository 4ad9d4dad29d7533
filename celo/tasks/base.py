"""Task and TaskFamily: what an optimizer trains (spec §2.8).

A :class:`Task` is a model, a loss and the data it trains on. Losses are pure
functions of ``(params, key, batch)`` (plus a model state for tasks that carry
one, such as BatchNorm statistics), so they can be jitted, vmapped over many
inner problems and run under ``lax.scan``.

A :class:`TaskFamily` is a distribution over tasks: ``sample(key)`` draws a
configuration pytree (it runs under ``vmap`` in meta-training, so it must be
made of arrays) and ``task_fn(cfg)`` builds the task it names.

Datasets are bound lazily. A task knows the shape of one batch
(:attr:`Task.abstract_batch`) without touching any file, so ``init`` and
``jax.eval_shape(task.init)`` never load data; the loaders run on the first
access of :attr:`Task.datasets`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
ModelState = Any
Batch = Any
TaskCfg = Any
Aux = Mapping[str, jnp.ndarray]


@dataclasses.dataclass
class DataSpec:
    """The data a task trains on, known by shape before it is loaded.

    Attributes:
      abstract_batch: one batch as ``{key: jax.ShapeDtypeStruct}``.
      make: zero-argument callable that builds the ``Datasets`` (loads files).
    """

    abstract_batch: dict[str, jax.ShapeDtypeStruct]
    make: Callable[[], Any]
    _built: Any = dataclasses.field(default=None, repr=False)

    def get(self) -> Any:
        """The datasets, built on first use and cached."""
        if self._built is None:
            self._built = self.make()
        return self._built

    @classmethod
    def from_datasets(cls, datasets: Any) -> DataSpec:
        """Wrap an already-built ``Datasets``."""
        return cls(dict(datasets.abstract_batch), lambda: datasets, datasets)


def as_data_spec(data: Any) -> DataSpec | None:
    """Accept a :class:`DataSpec`, a built ``Datasets`` or None."""
    if data is None or isinstance(data, DataSpec):
        return data
    return DataSpec.from_datasets(data)


def ones_like_batch(abstract_batch: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
    """A batch of ones with the abstract batch's shapes (what inits trace on)."""
    return {k: jnp.ones(v.shape, v.dtype) for k, v in abstract_batch.items()}


class Task:
    """One optimization problem: parameters, a loss and datasets.

    Stateless tasks implement :meth:`init` and :meth:`loss` (or
    :meth:`loss_and_aux`); tasks with a model state implement
    :meth:`init_with_state` and :meth:`loss_with_state_and_aux`. The base class
    derives the remaining methods from whichever pair is defined.
    """

    _data: DataSpec | None = None
    _name: str | None = None

    # -- data -------------------------------------------------------------------
    @property
    def datasets(self) -> Any:
        """The ``Datasets`` (train/inner_valid/outer_valid/test), loaded on first use."""
        return None if self._data is None else self._data.get()

    @datasets.setter
    def datasets(self, value: Any) -> None:
        self._data = as_data_spec(value)

    @property
    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct] | None:
        """Shapes and dtypes of one training batch, without loading data."""
        return None if self._data is None else self._data.abstract_batch

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    # -- parameters ---------------------------------------------------------------
    def init(self, key: jax.Array) -> Params:
        """Initial parameters."""
        if type(self).init_with_state is Task.init_with_state:
            raise NotImplementedError(f"{self.name} defines neither init nor init_with_state")
        return self.init_with_state(key)[0]

    def init_with_state(self, key: jax.Array) -> tuple[Params, ModelState]:
        """Initial parameters and model state (None for stateless tasks)."""
        return self.init(key), None

    # -- losses -------------------------------------------------------------------
    def loss(self, params: Params, key: jax.Array, data: Batch) -> jnp.ndarray:
        """Scalar training loss on one batch."""
        return self.loss_and_aux(params, key, data)[0]

    def loss_and_aux(self, params: Params, key: jax.Array, data: Batch) -> tuple[jnp.ndarray, Aux]:
        """Loss and a dict of auxiliary metrics."""
        if type(self).loss is not Task.loss:
            return self.loss(params, key, data), {}
        if type(self).loss_with_state_and_aux is not Task.loss_with_state_and_aux:
            loss, _, aux = self.loss_with_state_and_aux(params, None, key, data)
            return loss, aux
        raise NotImplementedError(f"{self.name} defines no loss")

    def loss_with_state(
        self, params: Params, state: ModelState, key: jax.Array, data: Batch
    ) -> tuple[jnp.ndarray, ModelState]:
        """Loss and the next model state."""
        loss, state, _ = self.loss_with_state_and_aux(params, state, key, data)
        return loss, state

    def loss_with_state_and_aux(
        self, params: Params, state: ModelState, key: jax.Array, data: Batch
    ) -> tuple[jnp.ndarray, ModelState, Aux]:
        """Loss, next model state and auxiliary metrics."""
        if state is not None:
            raise ValueError(f"{self.name} is stateless but was given a model state")
        loss, aux = self.loss_and_aux(params, key, data)
        return loss, None, aux

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        """Map a loss to the scale used for meta-losses (identity by default)."""
        return loss


class TaskFamily:
    """A distribution over tasks; ``sample`` must be vmappable."""

    _data: DataSpec | None = None
    _name: str | None = None

    @property
    def datasets(self) -> Any:
        return None if self._data is None else self._data.get()

    @datasets.setter
    def datasets(self, value: Any) -> None:
        self._data = as_data_spec(value)

    @property
    def eval_datasets(self) -> Any:
        return self.datasets

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    def sample(self, key: jax.Array) -> TaskCfg:
        """Draw a task configuration (a pytree of arrays)."""
        raise NotImplementedError

    def task_fn(self, cfg: TaskCfg) -> Task:
        """The task named by ``cfg``."""
        raise NotImplementedError

    def eval_task_fn(self, cfg: TaskCfg) -> Task:
        # The reference raises the task here instead of returning it (§2.8).
        return self.task_fn(cfg)

    def sample_task(self, key: jax.Array) -> Task:
        return self.task_fn(self.sample(key))


class _SingleTaskFamily(TaskFamily):
    def __init__(self, task: Task, name: str | None, eval_task: Task | None):
        self.task = task
        self.eval_task = task if eval_task is None else eval_task
        self._name = name or task.name

    @property
    def datasets(self) -> Any:
        # Delegated, so that building the family does not load the data.
        return self.task.datasets

    @property
    def eval_datasets(self) -> Any:
        return self.eval_task.datasets

    def sample(self, key: jax.Array) -> jnp.ndarray:
        del key
        return jnp.asarray(0)

    def task_fn(self, cfg: TaskCfg) -> Task:
        del cfg
        return self.task

    def eval_task_fn(self, cfg: TaskCfg) -> Task:
        del cfg
        return self.eval_task


def single_task_to_family(
    task: Task, name: str | None = None, eval_task: Task | None = None
) -> TaskFamily:
    """A family that always yields ``task``; its configuration is ``jnp.asarray(0)``."""
    return _SingleTaskFamily(task, name, eval_task)


def softmax_cross_entropy(*, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """``−Σ labels · log_softmax(logits)`` over the last axis."""
    return -jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1)


def sparse_softmax_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy against integer labels without building the one-hot matrix.

    Equal to ``softmax_cross_entropy(logits=logits, labels=one_hot(labels))`` up
    to float rounding; used for the 32k-vocabulary language models, where the
    one-hot tensor would be as large as the logits.
    """
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return logz - picked


def classification_normalizer(loss: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """``clip(loss, 0, 1.5·ln C)`` with NaN and ±inf mapped to the cap (§10.3)."""
    maxval = 1.5 * float(np.log(num_classes))
    # The reference clips first, which sends -inf to 0; a cross-entropy cannot
    # reach -inf, and a non-finite loss means divergence, so every one gets the cap.
    loss = jnp.nan_to_num(loss, nan=maxval, posinf=maxval, neginf=maxval)
    return jnp.clip(loss, 0.0, maxval)
