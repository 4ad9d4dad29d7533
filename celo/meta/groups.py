"""Group task families that can share one compiled unroll.

The four fast_velo families run the same 8×8 MLP on different data. Batched
together (``[F, N, 2]`` problems in one program) they compile once and run as
one larger, more efficient computation. Two families may be batched when
everything but their data is the same computation: the traced programs
(jaxprs, with their captured constants) of ``sample``, ``init_with_state`` and
the normalised loss agree, and so do the batch shapes. Comparing the programs
rather than class names or task names is what makes the rule safe: any
difference a family could make to the math shows up in its jaxpr.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import jax
import numpy as np

from celo.tasks.base import TaskFamily


def _closed_jaxpr_digest(closed) -> str:
    h = hashlib.sha256(str(closed.jaxpr).encode())
    for c in closed.consts:
        arr = np.asarray(c)
        h.update(f"{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _abstract_batch(family: TaskFamily, key: jax.Array):
    batch = family.sample_task(key).abstract_batch
    return None if batch is None else dict(batch)


def family_signature(family: TaskFamily) -> str:
    """A digest of the computation of ``family``, independent of its data."""
    key = jax.random.PRNGKey(0)

    def init(k):
        return family.task_fn(family.sample(k)).init_with_state(k)

    cfg = jax.eval_shape(family.sample, key)
    params, model_state = jax.eval_shape(init, key)
    batch = _abstract_batch(family, key)

    def loss(cfg, p, s, k, b):
        task = family.task_fn(cfg)
        value, _, _ = task.loss_with_state_and_aux(p, s, k, b)
        return task.normalizer(value)

    parts = [
        _closed_jaxpr_digest(jax.make_jaxpr(family.sample)(key)),
        _closed_jaxpr_digest(jax.make_jaxpr(init)(key)),
        _closed_jaxpr_digest(jax.make_jaxpr(loss)(cfg, params, model_state, key, batch)),
        repr(jax.tree_util.tree_map(lambda x: (x.shape, str(x.dtype)), batch)),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def group_families(families: Sequence[TaskFamily]) -> list[list[int]]:
    """Indices of ``families`` grouped by :func:`family_signature`, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, family in enumerate(families):
        groups.setdefault(family_signature(family), []).append(i)
    return list(groups.values())
