"""The ``theta.state`` checkpoint format (spec §9): flax msgpack, never pickle.

A checkpoint is ``flax.serialization.to_bytes(theta)`` of the theta pytree with
haiku's layout: nested string-keyed maps, array leaves as msgpack ext type 1,
named tuples (``LSTMState``) as maps in field order. Like flax, maps are written
in the dict's own key order; :func:`load_state` returns dicts in the file's key
order, so loading and re-saving any checkpoint gives the identical bytes (the
released files, written after training, have sorted keys because JAX rebuilds
dicts in sorted order; files written straight from ``init`` keep creation order).
Every saved checkpoint gets a JSON sidecar ``<name>.json`` with the optimizer
name, its configuration and the format version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import jax
import msgpack
import numpy as np
from flax import serialization

FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"


class CheckpointError(ValueError):
    """A checkpoint could not be read or does not match the expected layout."""


def to_bytes(theta: Any) -> bytes:
    """Serialise theta exactly as the reference writes ``theta.state``."""
    # Not tree_map: JAX would rebuild every dict in sorted key order.
    return serialization.to_bytes(theta)


def _in_order_of(tree: Any, raw: Any) -> Any:
    """Rebuild the dicts of ``tree`` with the key order of ``raw`` (the file's order)."""
    if isinstance(tree, Mapping) and isinstance(raw, Mapping):
        return {k: _in_order_of(tree[k], raw[k]) for k in raw}
    if isinstance(tree, tuple) and hasattr(tree, "_fields") and isinstance(raw, Mapping):
        return type(tree)(*(_in_order_of(getattr(tree, f), raw[f]) for f in tree._fields))
    return tree


def _atomic_write(path: str, data: bytes) -> None:
    from celo import storage

    storage.write_bytes(path, data)  # temp file, fsync, rename; the umask's file mode


def save_state(
    path: str,
    theta: Any,
    optimizer_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    sidecar: bool = True,
) -> str:
    """Write ``theta`` to ``path`` (atomically) plus a JSON sidecar.

    Returns the path written. ``path`` may be local or any URI understood by
    :mod:`celo.storage` (``gs://`` …) when that module is importable.
    """
    data = to_bytes(theta)
    meta = {
        "format": "flax-msgpack-theta",
        "format_version": FORMAT_VERSION,
        "optimizer": optimizer_name,
        "config": _jsonable(config or {}),
        "num_params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(theta))),
    }
    if "://" in path:
        from celo import storage

        storage.write_bytes(path, data)
        if sidecar:
            storage.write_bytes(path + SIDECAR_SUFFIX, json.dumps(meta, indent=2).encode())
        return path
    _atomic_write(path, data)
    if sidecar:
        _atomic_write(path + SIDECAR_SUFFIX, json.dumps(meta, indent=2).encode())
    return path


def read_sidecar(path: str) -> dict | None:
    """The JSON sidecar of a checkpoint, or None when there is none."""
    side = path + SIDECAR_SUFFIX
    try:
        raw = _read_bytes(side)
    except FileNotFoundError:
        return None
    return json.loads(raw)


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        from celo import storage

        return storage.read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def restore_raw(data: bytes, source: str = "<bytes>") -> dict:
    """Decode a checkpoint into nested dicts of numpy arrays, with no template."""
    if not data:
        raise CheckpointError(f"{source}: file is empty")
    if len(data) > 1 and data[0] == 0x80 and data[1] in (2, 3, 4, 5):
        raise CheckpointError(
            f"{source}: looks like a Python pickle; only flax msgpack checkpoints are supported "
            "(pickle is never loaded)"
        )
    try:
        tree = serialization.msgpack_restore(data)
    except (msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException, ValueError) as e:
        raise CheckpointError(
            f"{source}: not a valid flax msgpack checkpoint (truncated or corrupt): {e}"
        ) from e
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise CheckpointError(f"{source}: could not decode msgpack data: {e!r}") from e
    if not isinstance(tree, dict):
        raise CheckpointError(
            f"{source}: top level is {type(tree).__name__}, expected a map of theta entries"
        )
    return tree


def flatten_paths(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a/b/c": leaf}`` for nested maps and named tuples (slash-joined keys)."""
    out: dict[str, Any] = {}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        tree = tree._asdict()
    if isinstance(tree, Mapping):
        for k in tree:
            out.update(flatten_paths(tree[k], f"{prefix}/{k}" if prefix else str(k)))
        return out
    out[prefix] = tree
    return out


def _key_paths(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        tree = tree._asdict()
    if isinstance(tree, Mapping):
        out: dict[tuple, Any] = {}
        for k in tree:
            out.update(_key_paths(tree[k], prefix + (str(k),)))
        return out
    return {prefix: tree}


def _fmt(path: tuple) -> str:
    return " → ".join(repr(p) if "/" in p else p for p in path)


def check_matches(raw: dict, template: Any, source: str = "<checkpoint>") -> None:
    """Raise :class:`CheckpointError` naming every missing, extra or misshapen key."""
    got = _key_paths(raw)
    want = _key_paths(template)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(_fmt(p) for p in missing))
    if extra:
        problems.append("unexpected keys: " + ", ".join(_fmt(p) for p in extra))
    for p in sorted(set(want) & set(got)):
        ws, gs = np.shape(want[p]), np.shape(got[p])
        if tuple(ws) != tuple(gs):
            problems.append(f"shape mismatch at {_fmt(p)}: checkpoint {gs}, expected {ws}")
        else:
            wd = np.asarray(want[p]).dtype
            gd = np.asarray(got[p]).dtype
            if wd != gd:
                problems.append(f"dtype mismatch at {_fmt(p)}: checkpoint {gd}, expected {wd}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the optimizer's theta: " + "; ".join(problems)
        )


def from_bytes(template: Any, data: bytes, source: str = "<bytes>") -> Any:
    """Restore checkpoint bytes into the structure of ``template`` (strict)."""
    raw = restore_raw(data, source)
    check_matches(raw, template, source)
    restored = serialization.from_state_dict(template, raw)
    leaves = jax.tree_util.tree_leaves(restored)
    theta = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)
    return _in_order_of(theta, raw)


def load_state(path: str, template: Any) -> Any:
    """Load ``theta.state`` into the structure of ``template``.

    Raises:
      FileNotFoundError: no file at ``path``.
      CheckpointError: the file is not msgpack, is truncated, or its keys,
        shapes or dtypes differ from the template (all differences are named).
    """
    return from_bytes(template, _read_bytes(path), source=str(path))


def load_raw(path: str) -> dict:
    """Load a checkpoint without a template (nested dicts of numpy arrays)."""
    return restore_raw(_read_bytes(path), source=str(path))
