"""The ``fast_velo`` meta-training tasks (spec §10.3).

Four single-task families of the same 8×8 image MLP — flatten to 64 values,
``hk.nets.MLP([32, 10])`` with ReLU, 2,410 parameters — at batch 64:

=================================  =======================================
task                               data
=================================  =======================================
``ImageMLP_Mnist8_Relu32_bs64``        MNIST resized to 8×8
``ImageMLP_FashionMnist8_Relu32_bs64`` Fashion-MNIST resized to 8×8
``ImageMLP_Cifar10BW8_Relu32_bs64``    CIFAR-10 subset, grayscale, 8×8
``ImageMLP_Digits8_Relu32_bs64``       sklearn digits (8×8, stands in for SVHN)
=================================  =======================================

SVHN is not available offline; the sklearn digits are a real 8×8 digit set
that ships with scikit-learn. The reference gives all four families the name
``_MLPImageTask``, which makes per-family metric keys collide; here each
family carries its task's name.
"""

from __future__ import annotations

from pathlib import Path

from celo.tasks.base import Task, TaskFamily, single_task_to_family
from celo.tasks.image_mlp import _MLPImageTask
from celo.tasks.sources import image_source

BATCH_SIZE = 64
HIDDEN_SIZES = (32,)

#: task name → (loader, grayscale), in the reference's family order
#: (cifar, fashion_mnist, mnist, svhn).
FAST_VELO_TASKS: dict[str, tuple[str, bool]] = {
    "ImageMLP_Cifar10BW8_Relu32_bs64": ("cifar10", True),
    "ImageMLP_FashionMnist8_Relu32_bs64": ("fashion_mnist", False),
    "ImageMLP_Mnist8_Relu32_bs64": ("mnist", False),
    "ImageMLP_Digits8_Relu32_bs64": ("digits", False),
}


def fast_velo_task(name: str, *, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """One of the four fast_velo tasks by name."""
    if name not in FAST_VELO_TASKS:
        raise KeyError(f"unknown fast_velo task {name!r}; valid: {sorted(FAST_VELO_TASKS)}")
    dataset, grayscale = FAST_VELO_TASKS[name]
    data = image_source(
        dataset, BATCH_SIZE, (8, 8), grayscale=grayscale, data_dir=data_dir, seed=seed
    )
    return _MLPImageTask(data, HIDDEN_SIZES, num_classes=10, name=name)


def fast_velo_families(*, data_dir: str | Path | None = None, seed: int = 0) -> list[TaskFamily]:
    """The four meta-training families, each named after its task."""
    return [
        single_task_to_family(fast_velo_task(name, data_dir=data_dir, seed=seed))
        for name in FAST_VELO_TASKS
    ]


def _factory(name: str):
    def factory(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
        return fast_velo_task(name, data_dir=data_dir, seed=seed)

    factory.__name__ = factory.__qualname__ = name
    dataset, gray = FAST_VELO_TASKS[name]
    factory.__doc__ = (
        f"fast_velo MLP(32) on 8×8 {dataset}{' (grayscale)' if gray else ''}, batch 64."
    )
    return factory


FACTORIES = {name: _factory(name) for name in FAST_VELO_TASKS}
globals().update(FACTORIES)
