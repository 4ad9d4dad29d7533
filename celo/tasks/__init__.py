"""Tasks: what the optimizers train, for meta-training and for evaluation.

* :mod:`celo.tasks.base` — ``Task``, ``TaskFamily``, ``single_task_to_family``.
* Model modules, named as in learned_optimization: :mod:`~celo.tasks.image_mlp`,
  :mod:`~celo.tasks.conv`, :mod:`~celo.tasks.vit`, :mod:`~celo.tasks.autoencoder`,
  :mod:`~celo.tasks.lm`, :mod:`~celo.tasks.lopt_task` and the meta-training
  tasks of :mod:`~celo.tasks.fast_velo`.
* :mod:`celo.tasks.augment` — weight reparameterisation (``ReparamWeights*``).
* :mod:`celo.tasks.suites` — ``fast_velo``, ``velodrome17``, ``velodrome17_small``.

Look tasks up by name::

    task = celo.tasks.get_task("ImageMLP_FashionMnist_Relu128x128")
    params = task.init(jax.random.PRNGKey(0))
    loss = task.loss(params, key, next(task.datasets.train))
"""

from celo.tasks.augment import ReparamWeights, ReparamWeightsFamily, ReparamWeightsListFamily
from celo.tasks.base import (
    DataSpec,
    Task,
    TaskFamily,
    single_task_to_family,
    softmax_cross_entropy,
)
from celo.tasks.registry import (
    UnknownTaskError,
    family_names,
    get_task,
    get_task_families,
    get_task_family,
    task_names,
)
from celo.tasks.suites import SuiteTask, get_horizon, get_suite, get_suite_tasks, suite_names

__all__ = [
    "DataSpec",
    "ReparamWeights",
    "ReparamWeightsFamily",
    "ReparamWeightsListFamily",
    "SuiteTask",
    "Task",
    "TaskFamily",
    "UnknownTaskError",
    "family_names",
    "get_horizon",
    "get_suite",
    "get_suite_tasks",
    "get_task",
    "get_task_families",
    "get_task_family",
    "single_task_to_family",
    "softmax_cross_entropy",
    "suite_names",
    "task_names",
]
