"""Shared fixtures: golden traces, released checkpoints and the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
CHECKPOINTS = FIXTURES / "checkpoints"


@pytest.fixture
def data_dir() -> Path:
    """The data root from ``CELO_DATA_DIR``; skips (with the reason) when unset."""
    root = os.environ.get("CELO_DATA_DIR")
    if not root:
        pytest.skip("CELO_DATA_DIR is not set: point it at ../shared/datasets to run data tests")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"CELO_DATA_DIR={root} does not exist")
    return path
