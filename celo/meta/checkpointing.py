"""The files a meta-training run writes (spec §9.7), all through :mod:`celo.storage`.

``<experiment_root>/train/<exp_id>/``:

* ``theta_{i}.state`` every ``ckpt_interval`` iterations (``i = 0`` included),
  ``theta.state`` at the end: the released format (flax msgpack), each with
  its JSON sidecar;
* ``trainer_state.msgpack``: everything ``--resume`` needs: the learner state
  (flat theta, AdamW state, inner problems, PES accumulators, PRNG key,
  iteration) plus the metric history. It replaces the reference's
  ``trainer_latest.pkl``: flax msgpack, no pickle, written atomically;
* ``metrics.npz``: logged scalars as ``train/<name>`` plus ``train/xs``;
* ``config.json``: the flag values.
"""

from __future__ import annotations

import io
import json
from typing import Any

import jax
import numpy as np
from flax import serialization

from celo import checkpoints, storage
from celo.meta.configs import TRAINER_STATE_FILE

FORMAT = "celo-trainer-state"
FORMAT_VERSION = 1


class History:
    """Logged metric rows, keyed by iteration, plus the meta-losses not yet averaged."""

    def __init__(self) -> None:
        self.xs: list[int] = []
        self.rows: list[dict[str, float]] = []
        self.pending: list[float] = []

    def append(self, step: int, row: dict[str, float]) -> None:
        self.xs.append(int(step))
        self.rows.append({k: float(v) for k, v in row.items()})

    def columns(self) -> dict[str, np.ndarray]:
        names = sorted({k for r in self.rows for k in r})
        out = {n: np.asarray([r.get(n, np.nan) for r in self.rows], np.float64) for n in names}
        out["xs"] = np.asarray(self.xs, np.int64)
        return out

    def to_state(self) -> dict:
        cols = self.columns()
        return {"columns": cols, "pending": np.asarray(self.pending, np.float64)}

    @classmethod
    def from_state(cls, raw: dict) -> History:
        h = cls()
        cols = {k: np.asarray(v) for k, v in raw.get("columns", {}).items()}
        xs = cols.pop("xs", np.zeros((0,), np.int64))
        h.xs = [int(x) for x in xs]
        h.rows = [
            {k: float(v[i]) for k, v in cols.items() if not np.isnan(v[i])} for i in range(len(xs))
        ]
        h.pending = [float(x) for x in np.asarray(raw.get("pending", []))]
        return h


def theta_path(exp_dir: str, iteration: int | None = None) -> str:
    name = "theta.state" if iteration is None else f"theta_{iteration}.state"
    return storage.join(exp_dir, name)


def save_theta(path: str, theta: Any, optimizer_name: str, config: dict) -> None:
    checkpoints.save_state(
        path, jax.device_get(theta), optimizer_name=optimizer_name, config=config
    )


def save_trainer_state(exp_dir: str, state: Any, history: History, config: dict) -> str:
    """Write the resumable state atomically; returns its path."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(config, sort_keys=True),
        "state": serialization.to_state_dict(jax.device_get(state)),
        "history": history.to_state(),
    }
    path = storage.join(exp_dir, TRAINER_STATE_FILE)
    storage.write_bytes(path, serialization.msgpack_serialize(payload))
    return path


def load_trainer_state(exp_dir: str, template: Any) -> tuple[Any, History, dict]:
    """Restore a state saved by :func:`save_trainer_state` into ``template``'s structure.

    Raises:
      ValueError: the file is not a trainer state, or does not fit the template
        (the run was configured differently).
    """
    path = storage.join(exp_dir, TRAINER_STATE_FILE)
    raw = serialization.msgpack_restore(storage.read_bytes(path))
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path} is not a celo trainer state")
    want = jax.tree_util.tree_map(np.shape, serialization.to_state_dict(template))
    got = jax.tree_util.tree_map(np.shape, raw["state"])
    if want != got:
        raise ValueError(
            f"{path} does not match this configuration (its shapes or layout differ); "
            "resume with the flags the run was started with"
        )
    state = serialization.from_state_dict(template, raw["state"])
    return state, History.from_state(raw.get("history", {})), json.loads(raw.get("config", "{}"))


def save_metrics(exp_dir: str, history: History) -> None:
    cols = history.columns()
    buf = io.BytesIO()
    np.savez(buf, **{f"train/{k}": v for k, v in cols.items()})
    storage.write_bytes(storage.join(exp_dir, "metrics.npz"), buf.getvalue())


def save_config(exp_dir: str, config: dict) -> None:
    data = json.dumps(config, indent=2, sort_keys=True, default=str).encode()
    storage.write_bytes(storage.join(exp_dir, "config.json"), data)
