"""celo.hub against a loopback fake of the Hub (HF_ENDPOINT)."""

from __future__ import annotations

import numpy as np
import pytest

from celo import hub
from tests.conftest import CHECKPOINTS
from tests.fakes.fake_hub import FakeHub


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def test_download_returns_identical_bytes(fake_hub, tmp_path):
    data = (CHECKPOINTS / "celo" / "theta.state").read_bytes()
    fake_hub.add_file("amoudgl/celo", "theta.state", data)
    path = hub.download("amoudgl/celo", cache_dir=str(tmp_path / "cache"))
    assert open(path, "rb").read() == data
    assert any(r["method"] == "GET" and "resolve" in r["path"] for r in fake_hub.requests)


def test_load_optimizer_from_hub_runs(fake_hub, tmp_path):
    fake_hub.add_file(
        "amoudgl/celo-adam", "theta.state", (CHECKPOINTS / "celo_adam" / "theta.state").read_bytes()
    )
    opt = hub.load_optimizer("amoudgl/celo-adam", cache_dir=str(tmp_path / "cache"))
    assert opt.name == "celo_adam"
    params = {"w": np.ones((3, 2), np.float32)}
    state = opt.init(params, num_steps=10)
    state = opt.update(state, {"w": np.ones((3, 2), np.float32)}, loss=1.0)
    assert np.all(np.asarray(opt.get_params(state)["w"]) < 1.0)


def test_offline_uses_cache_and_fails_clearly_when_missing(fake_hub, tmp_path, monkeypatch):
    fake_hub.add_file("amoudgl/celo", "theta.state", b"abc")
    cache = str(tmp_path / "cache")
    first = hub.download("amoudgl/celo", cache_dir=cache)
    n_requests = len(fake_hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.download("amoudgl/celo", cache_dir=cache) == first
    assert len(fake_hub.requests) == n_requests, "offline download touched the network"
    with pytest.raises(hub.HubError, match="not in the local cache"):
        hub.download("amoudgl/celo-adam", cache_dir=cache)


def test_missing_repo_and_file_errors(fake_hub, tmp_path):
    fake_hub.add_file("amoudgl/celo", "theta.state", b"abc")
    with pytest.raises(hub.HubError, match="not found"):
        hub.download("amoudgl/nope", cache_dir=str(tmp_path))
    with pytest.raises(hub.HubError, match="config.json"):
        hub.download("amoudgl/celo", filename="config.json", cache_dir=str(tmp_path))


def test_repo_names_map_to_optimizers():
    assert hub.optimizer_name_for_repo("amoudgl/velo-4000") == "velo_4000"
    assert hub.optimizer_name_for_repo("someone/celo-adam") == "celo_adam"
