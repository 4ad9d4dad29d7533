"""celo.storage on local paths: atomic writes with ordinary file modes."""

from __future__ import annotations

import os
import stat

import pytest

from celo import checkpoints, storage
from tests.conftest import CHECKPOINTS


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_read_list_and_modes(tmp_path, umask_022):
    path = storage.join(str(tmp_path), "a", "b.bin")
    storage.write_bytes(path, b"one")
    storage.write_bytes(path, b"two")
    assert storage.read_bytes(path) == b"two"
    assert storage.list_dir(str(tmp_path / "a")) == ["b.bin"]  # no temporary file left
    assert storage.exists(path) and not storage.exists(path + ".x")
    assert storage.list_dir(str(tmp_path / "missing")) == []
    # The mode a plain open() would give (0644 here), not mkstemp's 0600: another user
    # (the next pipeline stage) must be able to read a checkpoint.
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    ckpt = str(tmp_path / "theta.state")
    checkpoints.save_state(ckpt, checkpoints.load_raw(str(CHECKPOINTS / "celo" / "theta.state")))
    assert stat.S_IMODE(os.stat(ckpt).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(ckpt + ".json").st_mode) == 0o644


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "theta.state")
    storage.write_bytes(path, b"old")

    def crash(src, dst):
        raise KeyboardInterrupt  # killed between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(path, b"new")
    monkeypatch.undo()
    assert storage.read_bytes(path) == b"old"
    assert os.listdir(tmp_path) == ["theta.state"]
