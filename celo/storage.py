"""Paths that may be local or remote (``gs://``), behind a few functions.

Everything that reads or writes checkpoints, trainer state, curves or results
goes through here, so that the same code runs on a laptop and on a cluster.
Local writes are atomic (temp file, fsync, rename). Remote schemes register a
backend in :data:`BACKENDS`; ``gs://`` is provided by :mod:`celo.storage_gcs`
when google-cloud-storage is installed.
"""

from __future__ import annotations

import importlib
import os
import uuid

#: scheme → module implementing read_bytes / write_bytes / exists / list_dir.
BACKENDS: dict[str, str] = {"gs": "celo.storage_gcs"}


def scheme(path: str) -> str | None:
    return path.split("://", 1)[0] if "://" in path else None


def _backend(path: str):
    s = scheme(path)
    if s not in BACKENDS:
        raise ValueError(
            f"unsupported storage scheme {s!r} in {path!r}; supported: local, "
            + ", ".join(f"{k}://" for k in BACKENDS)
        )
    return importlib.import_module(BACKENDS[s])


def join(base: str, *parts: str) -> str:
    if scheme(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def read_bytes(path: str) -> bytes:
    if scheme(path):
        return _backend(path).read_bytes(path)
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Atomic write: readers see the old file or the new one, never a partial one."""
    if scheme(path):
        _backend(path).write_bytes(path, data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Not mkstemp: its files are 0600, and a checkpoint must get the mode a plain open()
    # gives (0666 less the umask) so that a stage running as another user can read it.
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def exists(path: str) -> bool:
    if scheme(path):
        return _backend(path).exists(path)
    return os.path.exists(path)


def makedirs(path: str) -> None:
    if not scheme(path):
        os.makedirs(path, exist_ok=True)


def list_dir(path: str) -> list[str]:
    """Names directly under ``path`` (files and sub-folders)."""
    if scheme(path):
        return _backend(path).list_dir(path)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
