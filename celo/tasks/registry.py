"""Name → task lookup: ``get_task``, ``get_task_family`` and ``get_task_families``.

Task names are learned_optimization's (``ImageMLP_FashionMnist_Relu128x128``,
``Conv_Cifar10_32x64x64`` …) plus the four ``fast_velo`` tasks. Family names
are the reference's ``--task`` values (``fast_velo``, ``fmnist``, ``cifar10``,
``fmnist+cifar10``, spec §10.3) or any single task name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from pathlib import Path

from celo.tasks.base import Task, TaskFamily, single_task_to_family
from celo.tasks.fast_velo import FAST_VELO_TASKS

_MODULES = (
    "celo.tasks.image_mlp",
    "celo.tasks.conv",
    "celo.tasks.vit",
    "celo.tasks.autoencoder",
    "celo.tasks.lm",
    "celo.tasks.lopt_task",
    "celo.tasks.fast_velo",
)

#: The reference's ``get_task_family`` groups: name → task names (each becomes one family).
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {
    "fast_velo": tuple(FAST_VELO_TASKS),
    "fmnist": ("ImageMLP_FashionMnist_Relu128x128",),
    "cifar10": ("Conv_Cifar10_32x64x64",),
    "fmnist+cifar10": ("ImageMLP_FashionMnist_Relu128x128", "Conv_Cifar10_32x64x64"),
}


class UnknownTaskError(ValueError):
    """Raised for a task, family or suite name that is not registered; lists the valid names."""


def unknown_name_error(kind: str, name: str, valid: list[str]) -> UnknownTaskError:
    """The error for an unknown ``name``, with close matches and every valid name."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownTaskError(f"Unknown {kind} {name!r}.{hint} Valid names: {', '.join(valid)}")


@functools.cache
def _factories() -> dict[str, Callable[..., Task]]:
    out: dict[str, Callable[..., Task]] = {}
    for module in _MODULES:
        out.update(importlib.import_module(module).FACTORIES)
    return out


def task_names() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(_factories())


def family_names() -> list[str]:
    """Names :func:`get_task_family` accepts: the reference groups, then every task name."""
    return [*FAMILY_GROUPS, *task_names()]


def get_task(name: str, *, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Build the task registered as ``name``.

    Args:
      name: a name from :func:`task_names`.
      data_dir: data root for the loaders; None resolves ``$CELO_DATA_DIR``,
        then the user cache. Data load lazily, on the first use of ``task.datasets``.
      seed: seed of the data iterators' shuffling.

    Raises:
      UnknownTaskError: for an unregistered name (the message lists the valid ones).
    """
    factories = _factories()
    if name not in factories:
        raise unknown_name_error("task", name, task_names())
    return factories[name](data_dir=data_dir, seed=seed)


def get_task_families(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0
) -> list[TaskFamily]:
    """The families of a reference group or of one task, always as a list.

    Each family is named after its task, so per-family metric keys are unique.
    """
    if name in FAMILY_GROUPS:
        names = FAMILY_GROUPS[name]
    elif name in _factories():
        names = (name,)
    else:
        raise unknown_name_error("task family", name, family_names())
    return [single_task_to_family(get_task(n, data_dir=data_dir, seed=seed)) for n in names]


def get_task_family(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0
) -> TaskFamily | list[TaskFamily]:
    """The reference's ``get_task_family``.

    A group name (``fast_velo``, ``fmnist``, ``cifar10``, ``fmnist+cifar10``)
    returns a list of families, as the reference does; a single task name
    returns that task's family.
    """
    families = get_task_families(name, data_dir=data_dir, seed=seed)
    return families if name in FAMILY_GROUPS else families[0]
