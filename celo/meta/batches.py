"""Training data held on the device for a whole truncation window.

The reference draws batches on the host for every chunk of steps and copies
them to the device (spec §10.4, ``get_batch``). Meta-training tasks are small
(the fast_velo training splits are at most 48,000 images of 8×8), so here each
family's training split is copied to the device once, and every inner step
gathers its batch inside the compiled unroll from a random key.

Two consequences, both deliberate:

* batches are drawn uniformly *with replacement* (the reference reshuffles per
  epoch); for splits of thousands of examples and 64-example batches the two
  are statistically indistinguishable for meta-training;
* the data stream is a pure function of the PRNG key, so a resumed run sees
  exactly the batches an uninterrupted one would have seen.

Families of one group (see :func:`celo.meta.truncated_step.group_families`)
share array shapes, so their splits are stacked along a leading family axis,
padded to the longest split; ``sizes`` keeps each family's true length and
indices are drawn below it, so padding is never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from celo.tasks.base import TaskFamily


class DataError(ValueError):
    """A family's training data cannot be held on the device."""


@flax.struct.dataclass
class ResidentData:
    """Stacked training splits of a group of families.

    Attributes:
      arrays: name → array ``[F, n_max, ...]`` (one batch element per row).
      sizes: ``[F]`` int32, the number of valid rows of each family.
      batch_size: examples per batch (static).
    """

    arrays: dict
    sizes: jnp.ndarray
    batch_size: int = flax.struct.field(pytree_node=False)


def _train_arrays(family: TaskFamily) -> tuple[dict[str, np.ndarray], int] | None:
    """The training split of ``family`` as host arrays, and its batch size."""
    datasets = family.datasets
    if datasets is None:
        return None
    train = datasets.train
    arrays = getattr(train, "arrays", None)
    if arrays is None:
        raise DataError(
            f"family {family.name}: its training iterator ({type(train).__name__}) does not "
            "expose its arrays, so its data cannot be held on the device for meta-training"
        )
    # Native-size image sets keep uint8 pixels and scale each batch as it is
    # drawn; apply that map once to the whole split so batches are plain gathers.
    batch_fn = getattr(train, "batch_fn", None)
    if batch_fn is not None:
        arrays = batch_fn(dict(arrays))
    abstract = datasets.abstract_batch or {}
    out = {}
    for name, arr in arrays.items():
        want = abstract.get(name)
        dtype = want.dtype if want is not None else arr.dtype
        out[name] = np.asarray(arr, dtype=dtype)
    sizes = {a.shape[0] for a in abstract.values()}
    if len(sizes) != 1:
        raise DataError(f"family {family.name}: batch entries disagree on the batch size {sizes}")
    return out, sizes.pop()


def resident_data(families: Sequence[TaskFamily]) -> ResidentData | None:
    """Stack the training splits of same-shaped families (None if they have no data).

    Raises:
      DataError: a family has data and another has none, or the shapes differ.
    """
    loaded = [_train_arrays(f) for f in families]
    if all(x is None for x in loaded):
        return None
    if any(x is None for x in loaded):
        raise DataError("a group mixes families with and without training data")
    batch_sizes = {bs for _, bs in loaded}
    if len(batch_sizes) != 1:
        raise DataError(f"families of one group have different batch sizes {batch_sizes}")
    names = set(loaded[0][0])
    n_max = max(len(next(iter(a.values()))) for a, _ in loaded)
    stacked: dict[str, Any] = {}
    for name in sorted(names):
        rows = []
        for (arrays, _), fam in zip(loaded, families):
            if set(arrays) != names:
                raise DataError(
                    f"family {fam.name}: batch keys {sorted(arrays)} != {sorted(names)}"
                )
            a = arrays[name]
            pad = np.zeros((n_max - a.shape[0],) + a.shape[1:], a.dtype)
            rows.append(np.concatenate([a, pad]))
        stacked[name] = jnp.asarray(np.stack(rows))
    sizes = jnp.asarray([len(next(iter(a.values()))) for a, _ in loaded], jnp.int32)
    return ResidentData(arrays=stacked, sizes=sizes, batch_size=batch_sizes.pop())


def batch_indices(data: ResidentData | None, keys: jax.Array, num_steps: int):
    """Row indices ``[T, F, n, B]`` of ``num_steps`` batches per key (keys ``[F, n]``)."""
    if data is None:
        return None

    def per_family(size, family_keys):
        # Raw bits modulo the split size: one generator call (randint makes three),
        # and a bias below 2^-16 for splits under 65,536 rows.
        def one(k):
            bits = jax.random.bits(k, (num_steps, data.batch_size), jnp.uint32)
            return (bits % size.astype(jnp.uint32)).astype(jnp.int32)

        return jax.vmap(one)(family_keys)

    idx = jax.vmap(per_family)(data.sizes, keys)
    return jnp.moveaxis(idx, 2, 0)


def gather(data: ResidentData | None, idx) -> Any:
    """The batches ``{name: [F, n, B, ...]}`` at indices ``idx [F, n, B]``."""
    if data is None:
        return None
    per_family = lambda arrays, i: {name: a[i] for name, a in arrays.items()}
    return jax.vmap(per_family)(data.arrays, idx)


def sample_batches(data: ResidentData | None, keys: jax.Array) -> Any:
    """One batch per key: ``keys`` is ``[F, n]``, the result ``{name: [F, n, B, ...]}``.

    Returns None for families without data (the loss then receives None).
    """
    if data is None:
        return None
    return gather(data, batch_indices(data, keys, 1)[0])
