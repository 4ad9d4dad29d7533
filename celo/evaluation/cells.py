"""Where results live in an evaluation folder, and how they are written.

One *cell* is one training run: (optimizer label, task, seed, tag), where the
tag is a learning rate or ``theta``. Each finished cell is two files written
atomically through :mod:`celo.storage` (so ``gs://`` folders work)::

    DIR/cells/<label>/<task>/seed_<seed>/<tag>.npz   # the reference's curve keys
    DIR/cells/<label>/<task>/seed_<seed>/<tag>.json  # summary, timings, provenance

The ``.json`` is written last, so a cell counts as finished only when both
exist; a run that is killed loses at most the cell it was training.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

from celo import storage


@dataclasses.dataclass(frozen=True)
class Cell:
    """The identity of one training run."""

    label: str
    task: str
    seed: int
    tag: str

    def base(self, root: str) -> str:
        return storage.join(root, "cells", self.label, self.task, f"seed_{self.seed}", self.tag)


class ConfigMismatchError(RuntimeError):
    """A finished cell in the output folder was made with a different configuration."""


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_cell(root: str, cell: Cell, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    """Write the curve, then the summary that marks the cell finished."""
    base = cell.base(root)
    storage.write_bytes(base + ".npz", npz_bytes(arrays))
    record = {"cell": dataclasses.asdict(cell), **info}
    storage.write_bytes(base + ".json", json.dumps(record, indent=1, sort_keys=True).encode())


def read_info(root: str, cell: Cell) -> dict[str, Any] | None:
    """The summary of a finished cell, or None if it has not finished."""
    path = cell.base(root) + ".json"
    if not storage.exists(path):
        return None
    return json.loads(storage.read_bytes(path))


def read_curve(root: str, cell: Cell) -> dict[str, np.ndarray]:
    return load_npz(cell.base(root) + ".npz")


def is_done(root: str, cell: Cell, provenance: dict[str, Any]) -> bool:
    """True if the cell finished with this ``provenance`` (steps, schedule, checkpoint).

    Raises:
      ConfigMismatchError: the cell finished under a different configuration;
        resuming would mix incomparable runs, so the caller must pick another folder.
    """
    info = read_info(root, cell)
    if info is None:
        return False
    old = info.get("provenance", {})
    if old != provenance:
        diff = {
            k: (old.get(k), provenance.get(k))
            for k in set(old) | set(provenance)
            if old.get(k) != provenance.get(k)
        }
        raise ConfigMismatchError(
            f"{cell.base(root)} was made with a different configuration {diff} "
            "(old, new); use a fresh --output folder"
        )
    return True
