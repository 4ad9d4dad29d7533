"""Lazy bindings from tasks to the ``celo.data`` loaders.

A task's data is declared as a :class:`~celo.tasks.base.DataSpec`: the shape of
one batch (known statically, so ``init`` never loads files) and a closure that
calls the loader on first access of ``task.datasets``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import jax
import jax.numpy as jnp

from celo.tasks.base import DataSpec

#: Native resolution and channels of each image loader in ``celo.data.image``.
IMAGE_LOADERS: dict[str, tuple[tuple[int, int], int]] = {
    "mnist": ((28, 28), 1),
    "fashion_mnist": ((28, 28), 1),
    "cifar10": ((32, 32), 3),
    "cifar100": ((32, 32), 3),
    "digits": ((8, 8), 1),
}


def image_batch(batch_size: int, height: int, width: int, channels: int) -> dict:
    """Abstract image-classification batch ``{"image", "label"}``."""
    return {
        "image": jax.ShapeDtypeStruct((batch_size, height, width, channels), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    }


def text_batch(batch_size: int, sequence_length: int) -> dict:
    """Abstract language-modelling batch ``{"obs", "target"}``."""
    shape = (batch_size, sequence_length)
    return {
        "obs": jax.ShapeDtypeStruct(shape, jnp.int32),
        "target": jax.ShapeDtypeStruct(shape, jnp.int32),
    }


def image_source(
    dataset: str,
    batch_size: int,
    image_size: tuple[int, int] | None = None,
    *,
    grayscale: bool = False,
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> DataSpec:
    """Declare ``celo.data.image.<dataset>_datasets(batch_size, image_size, ...)``.

    Args:
      dataset: one of :data:`IMAGE_LOADERS`.
      batch_size: images per batch.
      image_size: (H, W) after resizing; the native size if None.
      grayscale: convert colour images to one channel (channel mean).
      data_dir: data root; None resolves ``$CELO_DATA_DIR`` then the user cache.
      seed: shuffling seed of the iterators.
    """
    if dataset not in IMAGE_LOADERS:
        raise ValueError(f"unknown image dataset {dataset!r}; valid: {sorted(IMAGE_LOADERS)}")
    native, channels = IMAGE_LOADERS[dataset]
    size = tuple(image_size or native)
    if grayscale:
        channels = 1

    def make():
        image = importlib.import_module("celo.data.image")
        fn = getattr(image, f"{dataset}_datasets")
        kwargs = {"seed": seed}
        if dataset != "digits":
            kwargs["data_dir"] = data_dir
        if grayscale:
            kwargs["convert_to_black_and_white"] = True
        return fn(batch_size, size, **kwargs)

    return DataSpec(image_batch(batch_size, size[0], size[1], channels), make)


def text_source(
    corpus: str,
    batch_size: int,
    sequence_length: int,
    *,
    vocab: str = "word",
    vocab_size: int | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> DataSpec:
    """Declare ``celo.data.text.text_lm_datasets(corpus, batch_size, sequence_length, ...)``."""

    def make():
        text = importlib.import_module("celo.data.text")
        return text.text_lm_datasets(
            corpus,
            batch_size,
            sequence_length,
            vocab=vocab,
            vocab_size=vocab_size,
            seed=seed,
            data_dir=data_dir,
        )

    return DataSpec(text_batch(batch_size, sequence_length), make)
