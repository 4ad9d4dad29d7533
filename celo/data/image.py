"""Image classification data sets as ``Datasets`` (spec §10.3).

Batches are ``{"image": float32 (B, H, W, C) in [0, 1], "label": int32 (B,)}``.
The image map follows the reference: a bilinear resize of the uint8 pixels
when the size differs (:func:`celo.data.transforms.resize_bilinear`), then
``/255``, then (optionally) the channel mean as grayscale. Splits are
``train[0:80%]``, ``train[80%:90%]``, ``train[90%:]`` of the training pool and
the whole test set; see :func:`celo.data.base.pool_splits` for the fixed pool
order that precedes the slicing.

Sources below ``<data root>/<name>/``, tried in order (the first found wins):

* ``mnist``, ``fashion_mnist``: IDX files, gzipped or raw.
* ``cifar10``: ``cifar-10-batches-bin/`` or ``cifar-10-binary.tar.gz`` (the
  official binary version, the format downloaded when nothing is present),
  then ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` (read without
  unpickling), then the shared subset ``cifar10_subset_32x32.npz``.
* ``cifar100``: ``cifar-100-binary/`` or ``cifar-100-binary.tar.gz``, then the
  python version. Labels are the 100 fine classes.

Decoded and resized arrays are cached per process, so building the datasets
a second time only costs new iterators. For a resized set the whole image map
is applied once at load time; a native-size set stays uint8 and each batch is
scaled as it is drawn (same values, 4× less RAM).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from celo.data import base, cifar_python, download, formats, paths, transforms

Raw = dict[str, tuple[np.ndarray, np.ndarray]]  # "train" / "test" -> (uint8 NHWC, labels)
PathLike = str | os.PathLike[str] | None

_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
    """File names of one CIFAR version pair (binary and python)."""

    bin_dir: str
    bin_tar: str
    bin_files: dict[str, list[str]]
    label_bytes: int  # 1 for CIFAR-10; CIFAR-100 records carry (coarse, fine)
    py_dir: str
    py_tar: str
    py_files: dict[str, list[str]]
    py_label_key: str


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-bin",
        "cifar-10-binary.tar.gz",
        {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
        1,
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels",
    ),
    "cifar100": _CifarLayout(
        "cifar-100-binary",
        "cifar-100-binary.tar.gz",
        {"train": ["train.bin"], "test": ["test.bin"]},
        2,
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        {"train": ["train"], "test": ["test"]},
        "fine_labels",
    ),
}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "digits": 10}
CIFAR10_SUBSET = "cifar10_subset_32x32.npz"


def _load_idx(name: str, folder: Path, data_dir: PathLike) -> Raw:
    stems = [s for pair in _IDX_STEMS.values() for s in pair]
    if any(formats.find_idx(folder, s) is None for s in stems):
        download.ensure_files(name, data_dir, looked_for=[f"{folder}/<file> (raw IDX)"])
    out = {}
    for split, (img_stem, lbl_stem) in _IDX_STEMS.items():
        images = formats.read_idx(formats.find_idx(folder, img_stem))
        labels = formats.read_idx(formats.find_idx(folder, lbl_stem))
        if images.ndim != 3 or len(images) != len(labels):
            raise formats.FormatError(
                f"{folder}: {split} images {images.shape}, labels {labels.shape}"
            )
        out[split] = (images[..., None], labels)
    return out


def _load_cifar(name: str, folder: Path, data_dir: PathLike) -> Raw:
    lay = _CIFAR[name]
    prefix = {lay.bin_tar: lay.bin_dir, lay.py_tar: lay.py_dir}
    candidates = [folder / n for n in (lay.bin_dir, lay.bin_tar, lay.py_dir, lay.py_tar)]
    found = next((c for c in candidates if c.exists()), None)
    if found is None and name == "cifar10" and (folder / CIFAR10_SUBSET).is_file():
        return formats.read_npz_subset(folder / CIFAR10_SUBSET)
    if found is None:
        looked = [str(c) for c in candidates]
        if name == "cifar10":
            looked.append(str(folder / CIFAR10_SUBSET))
        (found,) = download.ensure_files(name, data_dir, looked_for=looked)
    binary = found.name in (lay.bin_dir, lay.bin_tar)
    out = {}
    for split, names in (lay.bin_files if binary else lay.py_files).items():
        members = names if found.is_dir() else [f"{prefix[found.name]}/{n}" for n in names]
        parts = []
        for blob in formats.read_member_bytes(found, members):
            if binary:
                fine = lay.label_bytes - 1  # the last label byte: CIFAR-100's fine label
                parts.append(formats.decode_cifar_binary(blob, lay.label_bytes, fine, str(found)))
            else:
                batch = cifar_python.read_batch(blob)
                images = formats.channel_major_to_images(batch["data"])
                parts.append((images, np.asarray(batch[lay.py_label_key])))
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def _load_digits() -> Raw:
    from sklearn.datasets import load_digits  # only this loader needs scikit-learn

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[..., None]  # integer values 0..16
    labels = bunch.target
    # load_digits has no test split; hold out the last 297 (about 1/6, MNIST's ratio).
    return {"train": (images[:1500], labels[:1500]), "test": (images[1500:], labels[1500:])}


@functools.cache
def _raw(name: str, root: str) -> Raw:
    if name == "digits":
        raw = _load_digits()
    elif name in _CIFAR:
        raw = _load_cifar(name, Path(root) / name, root)
    else:
        raw = _load_idx(name, Path(root) / name, root)
    return {k: (x, y.astype(np.int32)) for k, (x, y) in raw.items()}


def load_arrays(name: str, data_dir: PathLike = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The decoded data set as ``{"train": (images, labels), "test": (...)}``.

    Images are uint8 ``(N, H, W, C)`` in file order, labels int32: the raw
    material for code that needs its own batch order (e.g. replaying a
    reference training curve). Arrays are cached and read-only.
    """
    if name not in NUM_CLASSES:
        raise ValueError(f"unknown image data set {name!r}; valid: {', '.join(NUM_CLASSES)}")
    return _raw(name, str(paths.data_root(data_dir)))


@functools.cache
def _prepared(
    name: str,
    root: str,
    image_size: tuple[int, int],
    reference_split_bug: bool,
    grayscale: bool,
    max_value: float,
) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """Per-split arrays, and whether batches still need scaling.

    A resized set is small (8×8 for fast_velo) and already float32, so the
    whole image map (resize, /max_value, grayscale) is applied once here and
    batches are plain gathers. A set at its native size stays uint8, 4× less
    RAM, and is scaled per batch; the values are identical either way.
    """
    raw = _raw(name, root)
    resize = tuple(raw["train"][0].shape[1:3]) != image_size

    def image_map(images: np.ndarray) -> np.ndarray:
        if not resize:
            return images
        resized = transforms.resize_bilinear(images, image_size)
        return transforms.scale_images(resized, max_value, grayscale)

    train_x, train_y = raw["train"]
    idx = base.pool_splits(len(train_x), reference_split_bug=reference_split_bug)
    pool = image_map(train_x)
    out = {s: {"image": pool[i], "label": train_y[i]} for s, i in idx.items()}
    out["test"] = {"image": image_map(raw["test"][0]), "label": raw["test"][1]}
    for arrays in out.values():
        base.readonly(*arrays.values())
    return out, not resize


def _scale_fn(max_value: float, grayscale: bool) -> Callable[[base.Batch], base.Batch]:
    def batch_fn(batch: base.Batch) -> base.Batch:
        image = transforms.scale_images(batch["image"], max_value, grayscale)
        return {"image": image, "label": batch["label"]}

    return batch_fn


def _image_datasets(
    name: str,
    batch_size: int,
    image_size: tuple[int, int],
    *,
    grayscale: bool = False,
    seed: int = 0,
    data_dir: PathLike = None,
    reference_split_bug: bool = False,
    max_value: float = 255.0,
) -> base.Datasets:
    root = str(paths.data_root(data_dir)) if name != "digits" else ""
    size = (int(image_size[0]), int(image_size[1]))
    arrays, per_batch = _prepared(
        name, root, size, bool(reference_split_bug), bool(grayscale), float(max_value)
    )
    return base.make_datasets(
        arrays,
        batch_size,
        seed=seed,
        batch_fn=_scale_fn(max_value, grayscale) if per_batch else None,
        extra_info={"num_classes": NUM_CLASSES[name]},
        name=name,
    )


def mnist_datasets(
    batch_size: int,
    image_size: tuple[int, int] = (28, 28),
    *,
    seed: int = 0,
    data_dir: PathLike = None,
) -> base.Datasets:
    """MNIST from IDX files (downloaded from the canonical mirrors if missing).

    Args:
        batch_size: examples per batch.
        image_size: output ``(height, width)``; bilinear resize if not 28×28.
        seed: seeds every split's shuffling.
        data_dir: explicit data root; default ``$CELO_DATA_DIR`` / user cache.
    """
    return _image_datasets("mnist", batch_size, image_size, seed=seed, data_dir=data_dir)


def fashion_mnist_datasets(
    batch_size: int,
    image_size: tuple[int, int] = (28, 28),
    *,
    seed: int = 0,
    data_dir: PathLike = None,
) -> base.Datasets:
    """Fashion-MNIST from IDX files; arguments as :func:`mnist_datasets`."""
    return _image_datasets("fashion_mnist", batch_size, image_size, seed=seed, data_dir=data_dir)


def cifar10_datasets(
    batch_size: int,
    image_size: tuple[int, int] = (32, 32),
    *,
    convert_to_black_and_white: bool = False,
    seed: int = 0,
    data_dir: PathLike = None,
) -> base.Datasets:
    """CIFAR-10: binary version, python version or the shared ``.npz`` subset.

    Args:
        batch_size: examples per batch.
        image_size: output ``(height, width)``; bilinear resize if not 32×32.
        convert_to_black_and_white: one channel, the mean of R, G, B after /255.
        seed: seeds every split's shuffling.
        data_dir: explicit data root.
    """
    return _image_datasets(
        "cifar10",
        batch_size,
        image_size,
        grayscale=convert_to_black_and_white,
        seed=seed,
        data_dir=data_dir,
    )


def cifar100_datasets(
    batch_size: int,
    image_size: tuple[int, int] = (32, 32),
    *,
    convert_to_black_and_white: bool = False,
    seed: int = 0,
    data_dir: PathLike = None,
    reference_split_bug: bool = False,
) -> base.Datasets:
    """CIFAR-100 (fine labels) from the binary or python version.

    Args:
        batch_size: examples per batch.
        image_size: output ``(height, width)``.
        convert_to_black_and_white: one channel, the channel mean after /255.
        seed: seeds every split's shuffling.
        data_dir: explicit data root.
        reference_split_bug: train on ``train[0:1%]`` (500 images) as the
            reference does through its ``min(1, …)`` bug (spec §10.3); off by
            default, for fidelity studies only.
    """
    return _image_datasets(
        "cifar100",
        batch_size,
        image_size,
        grayscale=convert_to_black_and_white,
        seed=seed,
        data_dir=data_dir,
        reference_split_bug=reference_split_bug,
    )


def digits_datasets(
    batch_size: int, image_size: tuple[int, int] = (8, 8), *, seed: int = 0
) -> base.Datasets:
    """scikit-learn's 8×8 digits (values 0–16, scaled by /16); needs no files.

    The first 1,500 examples form the training pool (split 80/10/10 as
    usual: 1,200 / 150 / 150); the last 297 are the test split.
    """
    return _image_datasets("digits", batch_size, image_size, seed=seed, max_value=16.0)
