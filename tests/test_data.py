"""Tests for celo.data: formats, splits, batching, resize, downloads.

Every canonical format is exercised on a tiny file that the test writes;
tests on the real shared data use the ``data_dir`` fixture.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo import data
from celo.data import base, cifar_python, download, image, text, transforms

# ---------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of a uint8 array (magic 0x0000 08 ndim, big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def numbered_images(n: int, offset: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is the example id, labels ``id % 10``."""
    ids = np.arange(offset, offset + n)
    images = np.broadcast_to(ids[:, None, None], (n, size, size)).astype(np.uint8)
    return images, (ids % 10).astype(np.uint8)


def write_mnist(root: Path, gz: bool, n_train: int = 100, n_test: int = 30) -> dict[str, bytes]:
    """Writes tiny MNIST IDX files; returns the bytes written per file name."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    files = {}
    for prefix, (n, offset) in {"train": (n_train, 0), "t10k": (n_test, 200)}.items():
        images, labels = numbered_images(n, offset)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            blob = idx_bytes(arr)
            if gz:
                name, blob = name + ".gz", gzip.compress(blob)
            (folder / name).write_bytes(blob)
            files[name] = blob
    return files


def cifar_records(ids: np.ndarray, label_bytes: int) -> bytes:
    """CIFAR binary records: labels then R, G, B planes of value id, id+1, id+2."""
    out = bytearray()
    for i in ids:
        labels = [i % 20, i % 100] if label_bytes == 2 else [i % 10]
        planes = np.concatenate([np.full(1024, (i + c) % 256, np.uint8) for c in range(3)])
        out += bytes(labels) + planes.tobytes()
    return bytes(out)


def add_to_tar(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def pickle_op_string(s: bytes) -> bytes:
    return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<i", len(s)) + s


def py2_cifar_batch(rows: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """The opcode stream Python 2's cPickle (protocol 2) writes for a CIFAR batch.

    A dict ``{data: ndarray uint8 (N, 3072), <label_key>: [ints], batch_label: str}``
    spelled the way numpy pickles an array: ``_reconstruct(ndarray, (0,), 'b')``
    then BUILD with ``(1, shape, dtype('u1'), False, raw bytes)``.
    """
    n = rows.shape[0]
    out = b"\x80\x02}q\x01(" + pickle_op_string(b"data") + b"q\x02"
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
    out += b"K\x00\x85" + pickle_op_string(b"b") + b"\x87Rq\x05"
    out += b"(K\x01M" + struct.pack("<H", n) + b"M\x00\x0c\x86"
    out += b"cnumpy\ndtype\nq\x06" + pickle_op_string(b"u1") + b"K\x00K\x01\x87Rq\x07"
    out += b"(K\x03" + pickle_op_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + pickle_op_string(rows.astype(np.uint8).tobytes()) + b"tb"
    out += pickle_op_string(label_key) + b"q\x08]q\t(" + b"".join(b"K" + bytes([v]) for v in labels)
    out += b"e" + pickle_op_string(b"batch_label") + pickle_op_string(b"training batch 1 of 5")
    return out + b"u."


def epoch_ids(it: base.BatchIterator, key: str = "label") -> list[np.ndarray]:
    return [next(it)[key] for _ in range(it.batches_per_epoch)]


def example_ids(batch: dict) -> np.ndarray:
    """Recover the example id from a numbered image (every pixel = id / 255)."""
    return np.rint(batch["image"][:, 0, 0, 0] * 255).astype(int)


def stored_ids(ds: data.Datasets, split: str) -> np.ndarray:
    """Sorted ids of the (unresized, uint8) numbered images held by one split."""
    return np.sort(ds.split(split).arrays["image"][:, 0, 0, 0].astype(int))


def test_data_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CELO_DATA_DIR", str(tmp_path / "env"))
    assert data.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_root() == tmp_path / "env"
    monkeypatch.delenv("CELO_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "celo" / "datasets"


# ---------------------------------------------------------------- resize


def test_resize_matches_hand_computed_bilinear():
    # 3x3 -> 2x2: scale 1.5, source coords (o + .5) * 1.5 - .5 = 0.25, 1.75,
    # so taps (0, 1) with weight .25 and (1, 2) with weight .75 on both axes.
    x = np.array([[0, 100, 0], [0, 0, 0], [200, 0, 0]], np.uint8)[None, :, :, None]
    # [0,0]: top 0 + 100·.25 = 25, bottom 0, out 25 − 25·.25.
    # [1,0]: top 0, bottom 200 − 200·.25 = 150, out 150·.75.
    expected = np.array([[18.75, 18.75], [112.5, 0.0]], np.float32)
    out = transforms.resize_bilinear(x, (2, 2))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_resize_upsampling_clamps_at_the_edges():
    # 1x2 -> 1x4: coords -0.25, 0.25, 0.75, 1.25; outside [0, 1] they clamp.
    x = np.array([[0, 100]], np.uint8)[None, :, :, None]
    out = transforms.resize_bilinear(x, (1, 4))
    np.testing.assert_array_equal(out[0, 0, :, 0], [0.0, 25.0, 75.0, 100.0])


def test_resize_agrees_with_jax_without_antialias_and_differs_with_it():
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 2)).astype(np.uint8)
    ours = transforms.resize_bilinear(x, (8, 8))
    shape = (4, 8, 8, 2)
    plain = jax.image.resize(jnp.asarray(x, jnp.float32), shape, "linear", antialias=False)
    np.testing.assert_allclose(ours, np.asarray(plain), atol=1e-3)
    smoothed = jax.image.resize(jnp.asarray(x, jnp.float32), shape, "linear")
    assert np.abs(ours - np.asarray(smoothed)).max() > 10.0


def test_same_size_is_not_resampled():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    np.testing.assert_array_equal(transforms.resize_bilinear(x, (4, 4)), x.astype(np.float32))


# ---------------------------------------------------------------- batching


def test_iterator_epochs_cover_each_example_once_and_reshuffle():
    it = base.BatchIterator({"label": np.arange(10)}, 3, seed=5)
    first = np.concatenate(epoch_ids(it))
    second = np.concatenate(epoch_ids(it))
    assert it.batches_per_epoch == 3 and it.epoch == 2
    for epoch in (first, second):
        assert len(epoch) == 9 and len(set(epoch.tolist())) == 9  # remainder of 1 dropped
    assert not np.array_equal(first, second)


def test_iterator_is_deterministic_per_seed():
    def draw(seed):
        it = base.BatchIterator({"label": np.arange(100)}, 8, seed=seed)
        return np.concatenate([next(it)["label"] for _ in range(30)])

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_iterator_rejects_a_split_smaller_than_a_batch():
    with pytest.raises(ValueError, match="cannot fill one batch"):
        base.BatchIterator({"x": np.zeros(5)}, 6, seed=0, name="tiny")


def test_pool_split_sizes_round_like_tfds_and_reproduce_the_bug_on_request():
    idx = base.pool_splits(1797)
    assert [len(idx[s]) for s in ("train", "inner_valid", "outer_valid")] == [1438, 179, 180]
    assert len(np.unique(np.concatenate(list(idx.values())))) == 1797
    bugged = base.pool_splits(50000, reference_split_bug=True)
    assert len(bugged["train"]) == 500 and len(bugged["inner_valid"]) == 5000
    np.testing.assert_array_equal(bugged["outer_valid"], base.pool_splits(50000)["outer_valid"])


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_mnist_idx_loader(tmp_path, gz):
    write_mnist(tmp_path, gz)
    ds = data.mnist_datasets(4, seed=3, data_dir=tmp_path)
    sizes = {s: ds.split(s).num_examples for s in base.SPLITS}
    assert sizes == {"train": 80, "inner_valid": 10, "outer_valid": 10, "test": 30}
    batch = next(ds.train)
    assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    ids = example_ids(batch)
    np.testing.assert_array_equal(batch["label"], ids % 10)  # images stay paired with labels
    pool = np.concatenate([stored_ids(ds, s) for s in ("train", "inner_valid", "outer_valid")])
    np.testing.assert_array_equal(np.sort(pool), np.arange(100))  # disjoint, complete
    assert set(example_ids(next(ds.test)).tolist()) <= set(range(200, 230))
    assert ds.extra_info == {"num_classes": 10}
    assert ds.abstract_batch["image"] == jax.ShapeDtypeStruct((4, 28, 28, 1), jnp.float32)


def test_mnist_resized_batches_are_resize_then_scale(tmp_path):
    write_mnist(tmp_path, gz=True)
    raw = np.random.default_rng(1).integers(0, 256, (30, 28, 28)).astype(np.uint8)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(raw)))
    ds = data.mnist_datasets(5, (8, 8), data_dir=tmp_path)
    # 28 -> 8: scale 3.5, output 0 samples source 1.25 (taps 1 and 2, weight .25).
    x = raw.astype(np.float32)
    top = x[:, 1, 1] + (x[:, 1, 2] - x[:, 1, 1]) * 0.25
    bottom = x[:, 2, 1] + (x[:, 2, 2] - x[:, 2, 1]) * 0.25
    expected = (top + (bottom - top) * 0.25) / np.float32(255)  # resize first, then /255
    np.testing.assert_allclose(ds.test.arrays["image"][:, 0, 0, 0], expected, rtol=1e-6)
    batch = next(ds.test)
    assert batch["image"].shape == (5, 8, 8, 1)
    stored = ds.test.arrays["image"].reshape(30, -1)
    for img in batch["image"].reshape(5, -1):
        assert np.isclose(stored, img, rtol=0, atol=1e-7).all(axis=1).any()


def test_splits_are_seeded_separately_and_reproducibly(tmp_path):
    write_mnist(tmp_path, gz=True)
    a = data.mnist_datasets(8, data_dir=tmp_path, seed=0)
    b = data.mnist_datasets(8, data_dir=tmp_path, seed=0)
    c = data.mnist_datasets(8, data_dir=tmp_path, seed=1)
    seq = [example_ids(next(a.train)) for _ in range(25)]
    np.testing.assert_array_equal(seq, [example_ids(next(b.train)) for _ in range(25)])
    assert not np.array_equal(seq, [example_ids(next(c.train)) for _ in range(25)])
    # The pool itself does not depend on the seed: the same examples in every split.
    for split in base.SPLITS:
        np.testing.assert_array_equal(stored_ids(a, split), stored_ids(c, split))
    with pytest.raises(ValueError, match="Unknown split"):
        a.split("validation")


# ---------------------------------------------------------------- CIFAR


def write_cifar_binary(root: Path, name: str, n_train: int, n_test: int, as_tar: bool) -> None:
    lay = image._CIFAR[name]
    train_ids, test_ids = np.arange(n_train), np.arange(1000, 1000 + n_test) % 256
    per_file = np.array_split(train_ids, len(lay.bin_files["train"]))
    blobs = {
        f: cifar_records(ids, lay.label_bytes)
        for f, ids in zip(lay.bin_files["train"], per_file, strict=True)
    }
    blobs[lay.bin_files["test"][0]] = cifar_records(test_ids, lay.label_bytes)
    folder = root / name
    folder.mkdir(parents=True)
    if as_tar:
        with tarfile.open(folder / lay.bin_tar, "w:gz") as tar:
            for f, blob in blobs.items():
                add_to_tar(tar, f"{lay.bin_dir}/{f}", blob)
    else:
        (folder / lay.bin_dir).mkdir()
        for f, blob in blobs.items():
            (folder / lay.bin_dir / f).write_bytes(blob)


@pytest.mark.parametrize("as_tar", [True, False], ids=["tarball", "extracted"])
def test_cifar10_binary_loader(tmp_path, as_tar):
    write_cifar_binary(tmp_path, "cifar10", 50, 20, as_tar)
    ds = data.cifar10_datasets(5, data_dir=tmp_path)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [40, 5, 5, 20]
    batch = next(ds.train)
    ids = example_ids(batch)
    # Channel-major planes become the last axis: R = id, G = id + 1, B = id + 2.
    np.testing.assert_allclose(
        batch["image"][:, 7, 9, :] * 255, ids[:, None] + [0, 1, 2], atol=1e-4
    )
    np.testing.assert_array_equal(batch["label"], ids % 10)
    gray = next(data.cifar10_datasets(5, convert_to_black_and_white=True, data_dir=tmp_path).test)
    assert gray["image"].shape == (5, 32, 32, 1)
    # Mean of (id, id + 1, id + 2) after /255 is (id + 1) / 255.
    mean_ids = np.rint(gray["image"][:, 0, 0, 0] * 255).astype(int) - 1
    np.testing.assert_allclose(gray["image"][:, 0, 0, 0] * 255, mean_ids + 1, atol=1e-4)
    np.testing.assert_array_equal(gray["label"], mean_ids % 10)
    # Resized sets apply the image map at load time; it must equal the per-batch path.
    small = next(data.cifar10_datasets(5, (16, 16), data_dir=tmp_path).train)["image"]
    small_gray = data.cifar10_datasets(
        5, (16, 16), convert_to_black_and_white=True, data_dir=tmp_path
    )
    np.testing.assert_allclose(next(small_gray.train)["image"], small.mean(-1, keepdims=True))


def test_cifar100_binary_fine_labels_and_reference_split_bug(tmp_path):
    write_cifar_binary(tmp_path, "cifar100", 200, 10, as_tar=True)
    ds = data.cifar100_datasets(2, (8, 8), data_dir=tmp_path)
    assert ds.extra_info == {"num_classes": 100}
    assert [ds.split(s).num_examples for s in base.SPLITS] == [160, 20, 20, 10]
    batch = next(ds.train)
    np.testing.assert_array_equal(batch["label"], example_ids(batch) % 100)  # fine, not coarse
    bugged = data.cifar100_datasets(2, (8, 8), data_dir=tmp_path, reference_split_bug=True)
    assert [bugged.split(s).num_examples for s in base.SPLITS] == [2, 20, 20, 10]


@pytest.mark.parametrize("as_tar", [True, False], ids=["tarball", "extracted"])
def test_cifar10_python_batches_are_read_without_unpickling(tmp_path, as_tar):
    lay = image._CIFAR["cifar10"]
    blobs = {}
    for k, f in enumerate(lay.py_files["train"] + lay.py_files["test"]):
        ids = np.arange(10 * k, 10 * k + 10)
        rows = np.stack([np.repeat([i, i + 1, i + 2], 1024) for i in ids]).astype(np.uint8)
        blobs[f] = py2_cifar_batch(rows, [int(i % 10) for i in ids], b"labels")
    folder = tmp_path / "cifar10"
    folder.mkdir()
    if as_tar:
        with tarfile.open(folder / lay.py_tar, "w:gz") as tar:
            for f, blob in blobs.items():
                add_to_tar(tar, f"{lay.py_dir}/{f}", blob)
    else:
        (folder / lay.py_dir).mkdir()
        for f, blob in blobs.items():
            (folder / lay.py_dir / f).write_bytes(blob)
    ds = data.cifar10_datasets(4, data_dir=tmp_path)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [40, 5, 5, 10]
    batch = next(ds.test)
    ids = example_ids(batch)
    assert set(ids.tolist()) <= set(range(50, 60))
    np.testing.assert_allclose(
        batch["image"][:, 31, 0, :] * 255, ids[:, None] + [0, 1, 2], atol=1e-4
    )
    np.testing.assert_array_equal(batch["label"], ids % 10)


def test_python_batch_reader_fields_and_refusals():
    rows = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    batch = cifar_python.read_batch(py2_cifar_batch(rows, [3, 7], b"fine_labels"))
    np.testing.assert_array_equal(batch["data"], rows)
    assert batch["fine_labels"] == [3, 7] and batch["batch_label"] == b"training batch 1 of 5"
    evil = b"\x80\x02cposix\nsystem\nq\x00U\x04trueq\x01\x85q\x02Rq\x03."
    with pytest.raises(cifar_python.UnsafePickleError, match="posix.system"):
        cifar_python.read_batch(evil)
    with pytest.raises(cifar_python.UnsafePickleError):
        cifar_python.read_batch(b"\x80\x02]q\x00.")  # a list, not a batch dict


def test_cifar10_npz_subset_layout_gets_class_mixed_splits(tmp_path):
    # The shared subset is sorted by class; the fixed pool order must mix it.
    ids = np.arange(300)
    labels = (ids // 30).astype(np.uint8)
    planes = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1)  # id = R + 256·G
    x = np.broadcast_to(planes[:, None, None, :], (300, 32, 32, 3)).astype(np.uint8)
    (tmp_path / "cifar10").mkdir()
    np.savez_compressed(
        tmp_path / "cifar10" / image.CIFAR10_SUBSET,
        x_train=x,
        y_train=labels,
        x_test=x[:50],
        y_test=labels[:50],
    )
    ds = data.cifar10_datasets(10, (16, 16), data_dir=tmp_path)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [240, 30, 30, 50]
    for split in ("train", "inner_valid", "outer_valid"):
        assert len(np.unique(ds.split(split).arrays["label"])) >= 8
    batch = next(ds.train)
    assert batch["image"].shape == (10, 16, 16, 3)
    rg = np.rint(batch["image"][:, 5, 5, :2] * 255).astype(int)
    np.testing.assert_array_equal(batch["label"], (rg[:, 0] + 256 * rg[:, 1]) // 30)


# ---------------------------------------------------------------- digits and text


def test_digits_datasets():
    ds = data.digits_datasets(64, seed=0)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [1200, 150, 150, 297]
    batch = next(ds.train)
    assert batch["image"].shape == (64, 8, 8, 1) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= 0.0 and batch["image"].max() == 1.0  # 16 / 16
    assert ds.extra_info == {"num_classes": 10}
    np.testing.assert_array_equal(
        next(data.digits_datasets(64, seed=0).train)["label"], batch["label"]
    )


TINY_TEXT = "b a b c. a b! " * 30 + "z " * 10  # 'z' appears only in the test split


def write_corpus(root: Path, name: str, content: str) -> None:
    (root / "text").mkdir(parents=True, exist_ok=True)
    (root / "text" / name).write_bytes(gzip.compress(content.encode("utf-8")))


def test_text_word_vocab_is_built_on_train_by_frequency_then_lexicographic(tmp_path):
    write_corpus(tmp_path, "shakespeare_plays.txt.gz", TINY_TEXT)
    ds = data.text_lm_datasets("shakespeare", 2, 4, vocab="word", data_dir=tmp_path)
    # Counts in the train split: b > a > '.' = '!' = c (ties: '!' < '.' < 'c').
    assert ds.extra_info["vocab"] == ("<pad>", "<unk>", "b", "a", "!", ".", "c")
    assert ds.extra_info["vocab_size"] == 7
    test_ids = np.concatenate([w for w in ds.test.arrays["window"]])
    assert text.UNK_ID in test_ids  # 'z' is unseen in train
    batch = next(ds.train)
    assert batch["obs"].shape == batch["target"].shape == (2, 4)
    np.testing.assert_array_equal(batch["obs"][:, 1:], batch["target"][:, :-1])
    capped = data.text_lm_datasets(
        "shakespeare", 2, 4, vocab="word", vocab_size=4, data_dir=tmp_path
    )
    assert capped.extra_info["vocab"] == ("<pad>", "<unk>", "b", "a")
    words = np.concatenate(list(capped.train.arrays["window"]))
    assert set(np.unique(words).tolist()) == {1, 2, 3}


def test_text_char_and_byte_streams_and_splits(tmp_path):
    write_corpus(tmp_path, "brown_corpus.txt.gz", TINY_TEXT)
    n = len(TINY_TEXT)
    chars = data.text_lm_datasets("brown", 3, 5, vocab="char", seed=1, data_dir=tmp_path)
    assert chars.extra_info["vocab"][:3] == ("<pad>", "<unk>", " ")
    windows = {s: chars.split(s).num_examples for s in base.SPLITS}
    cuts = [0, round(0.8 * n), round(0.9 * n), round(0.95 * n), n]
    assert list(windows.values()) == [
        (b - a - 1) // 5 for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    byte = data.text_lm_datasets("brown", 3, 5, vocab="byte", data_dir=tmp_path)
    assert byte.extra_info["vocab_size"] == 256
    first = byte.train.arrays["window"][0]
    assert bytes(first.astype(np.uint8).tolist()) == TINY_TEXT[:6].encode()
    with pytest.raises(ValueError, match="256"):
        data.text_lm_datasets("brown", 3, 5, vocab="byte", vocab_size=100, data_dir=tmp_path)


# ---------------------------------------------------------------- downloads


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server on 127.0.0.1 serving ``tmp_path / "served"``."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _registry_for(files: dict[str, bytes], folder: str, urls=(), corrupt: str = "") -> tuple:
    return tuple(
        download.RemoteFile(
            f"{folder}/{name}",
            urls,
            md5=hashlib.md5(blob + (b"x" if name == corrupt else b"")).hexdigest(),
        )
        for name, blob in files.items()
    )


def test_download_through_mirror_then_load(http_root, tmp_path, monkeypatch):
    served, url = http_root
    files = write_mnist(served, gz=True)
    monkeypatch.setitem(download.REGISTRY, "mnist", _registry_for(files, "mnist"))
    monkeypatch.setenv("CELO_DATA_MIRROR", url)
    root = tmp_path / "root"
    ds = data.mnist_datasets(4, data_dir=root)
    assert ds.test.num_examples == 30
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(files)
    for name, blob in files.items():
        assert (root / "mnist" / name).read_bytes() == blob


def test_checksum_mismatch_fails_cleanly_without_partial_files(http_root, tmp_path, monkeypatch):
    served, url = http_root
    files = write_mnist(served, gz=True)
    bad = "t10k-images-idx3-ubyte.gz"
    monkeypatch.setitem(download.REGISTRY, "mnist", _registry_for(files, "mnist", corrupt=bad))
    monkeypatch.setenv("CELO_DATA_MIRROR", url)
    root = tmp_path / "root"
    with pytest.raises(data.DataUnavailableError, match="md5") as err:
        data.mnist_datasets(4, data_dir=root)
    assert "'mnist'" in str(err.value) and bad in str(err.value)
    left = sorted(p.name for p in (root / "mnist").iterdir())
    assert bad not in left and not any(n.endswith(".part") for n in left)
    assert all((root / "mnist" / n).read_bytes() == files[n] for n in left)  # only verified files


def test_server_404_gives_a_clear_error(http_root, tmp_path, monkeypatch):
    served, url = http_root
    files = write_mnist(served, gz=True)
    (served / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setitem(download.REGISTRY, "mnist", _registry_for(files, "mnist"))
    monkeypatch.setenv("CELO_DATA_MIRROR", url)
    with pytest.raises(data.DataUnavailableError, match="HTTP 404") as err:
        data.mnist_datasets(4, data_dir=tmp_path / "root")
    assert "train-labels-idx1-ubyte.gz" in str(err.value)
    assert not list((tmp_path / "root" / "mnist").glob("*.part"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_data_without_network_is_one_clear_error(tmp_path, monkeypatch):
    # Canonical URLs that cannot be reached stand in for a machine without network.
    dead = f"http://127.0.0.1:{_closed_port()}/mnist/"
    files = {n.name: b"" for n in download.REGISTRY["mnist"]}
    monkeypatch.setitem(download.REGISTRY, "mnist", _registry_for(files, "mnist", urls=(dead,)))
    monkeypatch.delenv("CELO_DATA_MIRROR", raising=False)
    root = tmp_path / "empty"
    with pytest.raises(data.DataUnavailableError) as err:
        data.mnist_datasets(64, data_dir=root)
    message = str(err.value)
    assert "Data set 'mnist' is not available" in message
    assert str(root / "mnist" / "train-images-idx3-ubyte.gz") in message  # where it looked
    assert "CELO_DATA_DIR" in message and dead in message  # how to provide it
    assert isinstance(err.value, FileNotFoundError)


def test_corpus_without_a_canonical_url_names_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CELO_DATA_MIRROR", raising=False)
    with pytest.raises(data.DataUnavailableError, match="no download source") as err:
        data.text_lm_datasets("brown", 2, 8, data_dir=tmp_path)
    assert "text/brown_corpus.txt.gz" in str(err.value) and "CELO_DATA_MIRROR" in str(err.value)


# ---------------------------------------------------------------- shared data


@pytest.mark.parametrize("fn", [data.mnist_datasets, data.fashion_mnist_datasets])
def test_shared_idx_data(data_dir, fn):
    ds = fn(64, (8, 8), data_dir=data_dir)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [48000, 6000, 6000, 10000]
    batch = next(ds.train)
    assert batch["image"].shape == (64, 8, 8, 1)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert set(np.unique(ds.train.arrays["label"])) == set(range(10))


def test_shared_cifar10_subset(data_dir):
    ds = data.cifar10_datasets(64, (8, 8), convert_to_black_and_white=True, data_dir=data_dir)
    assert [ds.split(s).num_examples for s in base.SPLITS] == [20000, 2500, 2500, 5000]
    assert np.bincount(ds.outer_valid.arrays["label"]).min() > 150  # every class present
    assert next(ds.train)["image"].shape == (64, 8, 8, 1)
    full = next(data.cifar10_datasets(128, data_dir=data_dir).test)
    assert full["image"].shape == (128, 32, 32, 3)


@pytest.mark.parametrize("corpus", ["shakespeare", "brown"])
def test_shared_corpora(data_dir, corpus):
    ds = data.text_lm_datasets(corpus, 8, 32, vocab="word", vocab_size=32000, data_dir=data_dir)
    assert 1000 < ds.extra_info["vocab_size"] <= 32000
    batch = next(ds.outer_valid)
    assert batch["obs"].shape == (8, 32) and batch["obs"].max() < ds.extra_info["vocab_size"]
