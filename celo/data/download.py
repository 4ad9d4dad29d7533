"""Fetching missing data files: checksums, progress bar, atomic writes.

Every downloadable file is a :class:`RemoteFile` in :data:`REGISTRY`: its path
below the data root, the URLs it can come from, and the checksum upstream
publishes (MD5 for MNIST, Fashion-MNIST and CIFAR, whose authors publish only
MD5; SHA-256 for the project's own corpora). A download streams into a
temporary file next to the destination and is renamed into place only after
the checksum matched, so a failed or corrupt transfer never leaves a file that
a later run could mistake for data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from celo.data import paths

log = logging.getLogger(__name__)

MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
CIFAR_URLS = ("https://www.cs.toronto.edu/~kriz/",)
TIMEOUT_S = 60.0


class DataUnavailableError(FileNotFoundError):
    """A data set is missing locally and could not be downloaded."""


class ChecksumError(ValueError):
    """Downloaded bytes do not match the published checksum."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a data set and where to get it.

    Attributes:
        path: relative to the data root, e.g. ``mnist/train-images-idx3-ubyte.gz``.
        urls: base URLs; the file's name is appended to each. Empty when the
            file has no public canonical source (only a mirror can serve it).
        md5: published MD5 hex digest, if that is what upstream publishes.
        sha256: SHA-256 hex digest.
    """

    path: str
    urls: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _idx_files(folder: str, urls: tuple[str, ...], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"{folder}/{n}", urls, md5=m) for n, m in md5s.items())


REGISTRY: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _idx_files("mnist", MNIST_URLS, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion_mnist": _idx_files("fashion_mnist", FASHION_MNIST_URLS, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "cifar10": (RemoteFile("cifar10/cifar-10-binary.tar.gz", CIFAR_URLS,
                           md5="c32a1d4ab5d03f1284b67883e8d87530"),),
    "cifar100": (RemoteFile("cifar100/cifar-100-binary.tar.gz", CIFAR_URLS,
                            md5="03b5dce01913d631647c71ecec9e9cb8"),),
    "shakespeare": (RemoteFile("text/shakespeare_plays.txt.gz", sha256=(
        "315a122776be4e3f7bb982803c09d14b29e1e47d5544632278c7f2188ebacb20")),),
    "brown": (RemoteFile("text/brown_corpus.txt.gz", sha256=(
        "eb9314a9d6db531ef3e5ead3736a9f2379eedbbde16a52beea0832b89a4d4626")),),
}  # fmt: skip


def _hashers(remote: RemoteFile) -> dict[str, Any]:
    out = {}
    if remote.sha256:
        out["sha256"] = hashlib.sha256()
    if remote.md5:
        out["md5"] = hashlib.md5(usedforsecurity=False)  # upstream's integrity check, not security
    if not out:
        raise ValueError(f"{remote.path}: a RemoteFile needs a checksum")
    return out


def download_file(url: str, dest: Path, remote: RemoteFile, *, timeout: float = TIMEOUT_S) -> Path:
    """Downloads ``url`` to ``dest`` if its checksum matches ``remote``'s.

    The bytes go to a temporary file in ``dest``'s folder, which is renamed
    onto ``dest`` only after verification and removed on any failure.

    Raises:
        ChecksumError: the content does not match.
        urllib.error.URLError, OSError: the transfer failed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashers = _hashers(remote)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    bar.update(len(chunk))
        for algo, h in hashers.items():
            expected = getattr(remote, algo)
            if h.hexdigest() != expected:
                raise ChecksumError(f"{url}: {algo} {h.hexdigest()} != expected {expected}")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def candidate_urls(remote: RemoteFile) -> list[str]:
    """The mirror URL alone if ``$CELO_DATA_MIRROR`` is set, else the canonical ones."""
    mirror = paths.mirror_url()
    if mirror:
        return [f"{mirror}/{remote.path}"]
    return [base.rstrip("/") + "/" + remote.name for base in remote.urls]


def how_to_provide(dataset: str, root: Path) -> str:
    """The instructions that end every "data set unavailable" message."""
    files = REGISTRY.get(dataset, ())
    sources = sorted({u for f in files for u in f.urls})
    where = ", ".join(f.path for f in files) or f"{dataset}/..."
    lines = [f"To provide it, place {where} under {root}"]
    if sources:
        lines[0] += f" (download from {' or '.join(sources)})"
    lines.append(
        f"or point ${paths.DATA_DIR_ENV} (or data_dir=) at a data root that has them, "
        f"or set ${paths.MIRROR_ENV} to a base URL serving the data-root layout."
    )
    return ", ".join(lines)


def ensure_files(
    dataset: str, data_dir: str | os.PathLike[str] | None = None, *, looked_for: Sequence[str] = ()
) -> list[Path]:
    """Makes sure every registered file of ``dataset`` exists, downloading if needed.

    Args:
        dataset: a key of :data:`REGISTRY`.
        data_dir: explicit data root (see :func:`celo.data.paths.data_root`).
        looked_for: other local layouts that were tried first, for the message.

    Returns:
        Local paths of the files, in registry order.

    Raises:
        DataUnavailableError: one message naming the data set, where it was
            looked for, what went wrong with each URL, and how to provide it.
    """
    root = paths.data_root(data_dir)
    out = []
    for remote in REGISTRY[dataset]:
        dest = root / remote.path
        if not dest.is_file():
            _fetch(dataset, remote, dest, root, looked_for)
        out.append(dest)
    return out


def _fetch(dataset: str, remote: RemoteFile, dest: Path, root: Path, looked_for: Sequence[str]):
    urls = candidate_urls(remote)
    failures = []
    for url in urls:
        log.info("downloading %s from %s", remote.path, url)
        try:
            download_file(url, dest, remote)
            return
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code} {err.reason}")
        except (urllib.error.URLError, OSError, ChecksumError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
    searched = ", ".join([str(dest), *looked_for])
    tried = "; ".join(failures) if failures else "no download source is known for this file"
    raise DataUnavailableError(
        f"Data set {dataset!r} is not available: looked for {searched}. "
        f"Download failed: {tried}. {how_to_provide(dataset, root)}"
    )
