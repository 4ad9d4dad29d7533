"""Where data sets live on disk, and where missing ones are fetched from.

The data root is resolved in this order: an explicit ``data_dir`` argument,
then ``$CELO_DATA_DIR``, then the user cache ``~/.cache/celo/datasets`` (or
``$XDG_CACHE_HOME/celo/datasets``). Below the root every data set has its own
folder (``mnist/``, ``fashion_mnist/``, ``cifar10/``, ``cifar100/``, ``text/``),
holding its files in their canonical download format.

``$CELO_DATA_MIRROR`` names a base URL that serves the same layout as a data
root (``<mirror>/mnist/train-images-idx3-ubyte.gz``, ...). When it is set,
downloads use only the mirror: an explicit override must not fall back to the
internet behind the user's back. These two variables are the only environment
the data layer reads, and only here.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "CELO_DATA_DIR"
MIRROR_ENV = "CELO_DATA_MIRROR"


def default_cache_dir() -> Path:
    """The per-user cache directory used when no data root is configured."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "celo" / "datasets"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolves the data root directory.

    Args:
        data_dir: an explicit root; wins over the environment when given.

    Returns:
        ``data_dir`` if given, else ``$CELO_DATA_DIR`` if set and non-empty, else
        :func:`default_cache_dir`. The directory is not created here.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of one data set (``<root>/<name>``) below the resolved root."""
    return data_root(data_dir) / name


def mirror_url() -> str | None:
    """The base URL from ``$CELO_DATA_MIRROR`` without a trailing slash, or None."""
    url = os.environ.get(MIRROR_ENV)
    return url.rstrip("/") if url else None
