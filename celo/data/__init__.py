"""Offline data loaders for the canonical formats, and data-root resolution.

This package is the only code that touches data set files. Every dataset
function returns a :class:`Datasets` of four infinite, per-epoch reshuffled,
seed-deterministic batch iterators (``train``, ``inner_valid``,
``outer_valid``, ``test``).
"""

from celo.data.base import BatchIterator, Datasets
from celo.data.download import ChecksumError, DataUnavailableError
from celo.data.image import (
    cifar10_datasets,
    cifar100_datasets,
    digits_datasets,
    fashion_mnist_datasets,
    mnist_datasets,
)
from celo.data.paths import data_root
from celo.data.text import text_lm_datasets

__all__ = [
    "BatchIterator",
    "ChecksumError",
    "DataUnavailableError",
    "Datasets",
    "cifar10_datasets",
    "cifar100_datasets",
    "data_root",
    "digits_datasets",
    "fashion_mnist_datasets",
    "mnist_datasets",
    "text_lm_datasets",
]
