"""The ``Datasets`` container and in-RAM batching shared by every loader.

A data set is loaded once per process into numpy arrays (see the loaders'
caches); each call of a dataset function then builds fresh, cheap iterators
over those arrays. Iterators are infinite, reshuffle at every epoch, drop the
remainder, and are deterministic given a seed. Unlike the reference, which
shuffles with the unseeded global ``numpy.random`` (spec §15.1 item 15), each
split draws from its own generator seeded by ``(seed, split index)``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

Batch = dict[str, np.ndarray]

SPLITS: tuple[str, ...] = ("train", "inner_valid", "outer_valid", "test")

# Fixed seed of the permutation that orders a training pool before it is cut
# into train / inner_valid / outer_valid. It is independent of the iterator
# seed, so split membership is a property of the data set, not of the run.
POOL_ORDER_SEED = 0


@dataclasses.dataclass
class Datasets:
    """Four infinite batch iterators plus static information about the batches.

    Attributes:
        train: batches for inner training.
        inner_valid: batches for validation inside the inner problem.
        outer_valid: batches for the meta-objective.
        test: batches from the held-out test set.
        extra_info: images: ``{"num_classes": C}``; text: ``{"vocab_size": V}``.
        abstract_batch: key -> ``jax.ShapeDtypeStruct`` of one batch.
    """

    train: Iterator[Batch]
    inner_valid: Iterator[Batch]
    outer_valid: Iterator[Batch]
    test: Iterator[Batch]
    extra_info: dict = dataclasses.field(default_factory=dict)
    abstract_batch: dict = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> Iterator[Batch]:
        """Returns the iterator of one split.

        Args:
            name: one of ``"train"``, ``"inner_valid"``, ``"outer_valid"``, ``"test"``.

        Raises:
            ValueError: for any other name.
        """
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, name)


class BatchIterator:
    """Infinite, reshuffled-per-epoch batches drawn from arrays held in RAM.

    Each epoch draws a fresh permutation of the examples from a generator
    seeded once at construction, and yields ``len // batch_size`` batches; the
    remainder of the permutation is dropped. ``batch_fn`` turns the gathered
    rows into the final batch (e.g. uint8 -> float32 scaling), so the cached
    arrays can stay compact. Calls to ``next`` are serialised by a lock
    because the reference shares iterators between threads.

    Args:
        arrays: equally long arrays, indexed along axis 0.
        batch_size: examples per batch.
        seed: anything ``numpy.random.default_rng`` accepts.
        batch_fn: maps the gathered rows to the batch that is yielded.
        name: used in error messages.

    Raises:
        ValueError: if the arrays have different lengths or hold fewer than
            ``batch_size`` examples.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        batch_size: int,
        seed: Any,
        batch_fn: Callable[[Batch], Batch] | None = None,
        name: str = "split",
    ) -> None:
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"{name}: arrays have different lengths {sorted(lengths)}.")
        (self.num_examples,) = lengths
        if batch_size < 1 or self.num_examples < batch_size:
            raise ValueError(
                f"{name}: {self.num_examples} examples cannot fill one batch of {batch_size}."
            )
        self._arrays = dict(arrays)
        self._batch_size = batch_size
        self._batch_fn = batch_fn
        self._rng = np.random.default_rng(seed)
        self.batches_per_epoch = self.num_examples // batch_size
        self.epoch = 0
        self._order: np.ndarray | None = None
        self._position = 0
        self._lock = threading.Lock()

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays batches are gathered from (before ``batch_fn``)."""
        return dict(self._arrays)

    @property
    def batch_fn(self) -> Callable[[Batch], Batch] | None:
        """The map applied to each gathered batch (e.g. uint8 pixels to floats), if any."""
        return self._batch_fn

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        with self._lock:
            if self._order is None or self._position == self.batches_per_epoch:
                self._order = self._rng.permutation(self.num_examples)
                self._position = 0
                self.epoch += 1
            start = self._position * self._batch_size
            idx = self._order[start : start + self._batch_size]
            self._position += 1
        batch = {k: v[idx] for k, v in self._arrays.items()}
        return self._batch_fn(batch) if self._batch_fn is not None else batch


def percent_boundary(percent: float, num_examples: int) -> int:
    """The example index of a TFDS percent slice boundary (``train[:80%]``).

    TFDS rounds each boundary to the closest example (Python ``round``).
    """
    return int(round(percent * num_examples / 100.0))


def pool_splits(
    num_examples: int, *, train_percent: float = 80.0, reference_split_bug: bool = False
) -> dict[str, np.ndarray]:
    """Indices of train / inner_valid / outer_valid within a training pool.

    The pool is first put in a fixed pseudo-random order (``POOL_ORDER_SEED``),
    as TFDS shuffles a data set once when preparing it, so that class-sorted
    files (like the CIFAR-10 subset) give class-balanced splits. Then the
    reference slices apply: ``[0:80%]``, ``[80%:90%]``, ``[90%:]``.

    Args:
        num_examples: size of the training pool.
        train_percent: end of the training slice, in percent.
        reference_split_bug: reproduce the upstream ``min(1, int(80·f))`` bug
            (spec §10.3): the training slice becomes ``[0:1%]``; the
            validation slices are unchanged.

    Returns:
        Split name -> index array into the pool.
    """
    order = np.random.default_rng(POOL_ORDER_SEED).permutation(num_examples)
    train_end = percent_boundary(1.0 if reference_split_bug else train_percent, num_examples)
    lo = percent_boundary(80.0, num_examples)
    hi = percent_boundary(90.0, num_examples)
    return {"train": order[:train_end], "inner_valid": order[lo:hi], "outer_valid": order[hi:]}


def split_seed(seed: int, split: str) -> list[int]:
    """The generator seed of one split, derived from the user's seed."""
    return [int(seed), SPLITS.index(split)]


def make_datasets(
    split_arrays: Mapping[str, Mapping[str, np.ndarray]],
    batch_size: int,
    *,
    seed: int,
    batch_fn: Callable[[Batch], Batch] | None,
    extra_info: dict,
    name: str,
) -> Datasets:
    """Builds a ``Datasets`` of :class:`BatchIterator` s over per-split arrays.

    ``abstract_batch`` is read off one batch of the train split produced by a
    throwaway iterator, so it always matches what the iterators yield.
    """
    iters = {
        split: BatchIterator(
            split_arrays[split],
            batch_size,
            split_seed(seed, split),
            batch_fn,
            name=f"{name}/{split}",
        )
        for split in SPLITS
    }
    probe = BatchIterator(split_arrays["train"], batch_size, 0, batch_fn, name=name)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in next(probe).items()}
    return Datasets(**iters, extra_info=dict(extra_info), abstract_batch=abstract)


def readonly(*arrays: np.ndarray) -> Sequence[np.ndarray]:
    """Marks cached arrays read-only, so no caller can corrupt the shared copy."""
    for a in arrays:
        a.setflags(write=False)
    return arrays
