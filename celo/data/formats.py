"""Decoders for the canonical on-disk formats of the image data sets.

* IDX (MNIST, Fashion-MNIST): ``train-images-idx3-ubyte[.gz]`` etc., gzipped
  as downloaded or raw after ``gunzip``.
* CIFAR binary version (``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz``,
  the official non-pickle downloads): fixed-length records of label byte(s)
  followed by 3,072 pixel bytes in channel-major (R, G, B planes) order. The
  tarball is read member by member; nothing is extracted to disk.
* CIFAR python version: see :mod:`celo.data.cifar_python` (never unpickled).
* The ``.npz`` subset layout of the project's shared data root
  (``x_train``, ``y_train``, ``x_test``, ``y_test``), read without pickle.
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CIFAR_PIXELS = 32 * 32 * 3


class FormatError(ValueError):
    """A data file does not have the layout its format requires."""


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        # Decide by the gzip magic, not the name, so a gunzipped file keeps working.
        if head == b"\x1f\x8b":
            return gzip.decompress(f.read())
        return f.read()


def decode_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decodes an IDX byte string to an array of its declared dtype and shape.

    Args:
        data: the whole (decompressed) file.
        source: named in error messages.

    Raises:
        FormatError: for a bad magic number or a size that does not match.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise FormatError(f"{source}: not an IDX file (magic {data[:4]!r})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != header + count * dtype.itemsize:
        raise FormatError(
            f"{source}: IDX header declares shape {shape} ({count} values) but the file has "
            f"{len(data) - header} payload bytes"
        )
    array = np.frombuffer(data, dtype, count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file, gzipped or raw."""
    return decode_idx(_read_maybe_gzip(Path(path)), str(path))


def find_idx(folder: Path, stem: str) -> Path | None:
    """``<stem>.gz`` or raw ``<stem>`` in ``folder``, whichever exists first."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def decode_cifar_binary(
    data: bytes, label_bytes: int, label_index: int, source: str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes CIFAR binary records.

    Args:
        data: concatenated records.
        label_bytes: 1 for CIFAR-10; 2 for CIFAR-100 (coarse, fine).
        label_index: which label byte to keep (CIFAR-100 fine labels: 1).
        source: named in error messages.

    Returns:
        uint8 images ``(N, 32, 32, 3)`` and uint8 labels ``(N,)``.
    """
    record = label_bytes + CIFAR_PIXELS
    if len(data) % record:
        raise FormatError(f"{source}: {len(data)} bytes is not a multiple of {record}")
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, label_index].copy()


def channel_major_to_images(rows: np.ndarray) -> np.ndarray:
    """``(N, 3072)`` R/G/B planes (CIFAR's pixel layout) to ``(N, 32, 32, 3)``."""
    rows = np.asarray(rows, np.uint8)
    if rows.ndim != 2 or rows.shape[1] != CIFAR_PIXELS:
        raise FormatError(f"CIFAR pixel rows must be (N, {CIFAR_PIXELS}), got {rows.shape}")
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def read_member_bytes(source: Path, names: Sequence[str]) -> list[bytes]:
    """Reads files by relative name from a folder or from a ``.tar.gz`` archive.

    Archive members are looked up by exact name and read in memory, so a
    crafted archive cannot write outside the data root.
    """
    if source.is_dir():
        return [(source / n).read_bytes() for n in names]
    with tarfile.open(source, "r:*") as tar:
        out = []
        for n in names:
            member = tar.getmember(n)
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                raise FormatError(f"{source}: {n} is not a regular file")
            out.append(handle.read())
        return out


def read_npz_subset(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the shared ``.npz`` layout: ``{split: (uint8 NHWC images, labels)}``."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
        if missing:
            raise FormatError(f"{path}: missing arrays {sorted(missing)}")
        return {
            "train": (np.asarray(z["x_train"], np.uint8), np.asarray(z["y_train"])),
            "test": (np.asarray(z["x_test"], np.uint8), np.asarray(z["y_test"])),
        }
