"""``celo publish``: the folder, the model card, and uploads to a loopback fake Hub.

Not exercised here (they need the real Hub): Xet transfers, real
authentication and permissions, and the Hub's full YAML schema.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")

from huggingface_hub import ModelCard, constants  # noqa: E402

from celo import checkpoints, cli, hub, model_card  # noqa: E402
from tests.conftest import CHECKPOINTS, FIXTURES  # noqa: E402
from tests.fakes.fake_hub import FakeHub  # noqa: E402

pytestmark = pytest.mark.integration

TOKEN = "hf_celoTEST7f3aTOKENdoNotLeak"
REPO = "celo-org/celo-smoke"
SUMMARY = FIXTURES / "eval_summary"
EXPECTED_FILES = [
    "README.md",
    "config.json",
    "eval/summary.json",
    "eval/tables.md",
    "plots/curves_all.png",
    "plots/iqm.png",
    "theta.state",
]


def _png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\0" + b"\x80\x80\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + (chunk(b"IEND", b""))
    )


@pytest.fixture
def run_dir(tmp_path):
    """A smoke run's outputs: a checkpoint with sidecar and flag dump, and an evaluation."""
    train = tmp_path / "train" / "smoke"
    theta = checkpoints.load_raw(str(CHECKPOINTS / "celo" / "theta.state"))
    ckpt = str(train / "theta.state")
    checkpoints.save_state(ckpt, theta, optimizer_name="celo", config={"outer_lr": 1e-4})
    (train / "config.json").write_text(json.dumps({"outer_lr": 3e-4, "num_outer_steps": 3}))
    results = tmp_path / "eval"
    (results / "plots").mkdir(parents=True)
    text = (SUMMARY / "summary.json").read_text().replace('"CHECKPOINT"', json.dumps(ckpt))
    (results / "summary.json").write_text(text)
    (results / "tables.md").write_text((SUMMARY / "tables.md").read_text())
    for name in ("iqm.png", "curves_all.png"):
        (results / "plots" / name).write_bytes(_png())
    return {"checkpoint": ckpt, "results": str(results), "root": tmp_path}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    with FakeHub(token=TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        # huggingface_hub reads this once, at import.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_TOKEN_FILE", raising=False)
        yield server


def _publish(run_dir, *extra) -> int:
    return cli.main(
        [
            "publish",
            "--checkpoint",
            run_dir["checkpoint"],
            "--results",
            run_dir["results"],
            "--repo-id",
            REPO,
            *extra,
        ]
    )


def test_dry_run_writes_a_folder_whose_card_loads(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no network allowed
    out = tmp_path / "card"
    assert _publish(run_dir, "--dry-run", "--out", str(out)) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == EXPECTED_FILES
    assert (out / "theta.state").read_bytes() == Path(run_dir["checkpoint"]).read_bytes()
    # The flag dump wins over the sidecar; the sidecar supplies the optimizer name.
    config = json.loads((out / "config.json").read_text())
    assert config == {"optimizer": "celo", "outer_lr": 3e-4, "num_outer_steps": 3}

    card = ModelCard.load(out / "README.md")
    summary = json.loads((SUMMARY / "summary.json").read_text())["optimizers"]["celo"]
    results = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("custom", "iqm_final_loss")] == pytest.approx(summary["iqm_final_loss"])
    assert results[("custom", "iqm_speedup")] == pytest.approx(summary["iqm_speedup"])
    for task, t in summary["per_task"].items():
        assert results[(task, "final_loss_score")] == pytest.approx(t["final_loss_score"])
        assert results[(task, "speedup_score")] == pytest.approx(t["speedup_score"])
    assert len(results) == 2 + 2 * len(summary["per_task"])
    assert card.data.model_name == "celo-smoke" and "learned-optimizer" in card.data.tags
    text = card.text
    for needle in (
        "## Usage",
        'load_optimizer("celo-org/celo-smoke", optimizer="celo")',
        "## Training recipe",
        "`num_outer_steps`",
        "## Evaluation",
        "[0.870, 0.910]",
        "## Data substitutions",
        "ImageMLP_Digits8_Relu32_bs64",
        "![iqm](plots/iqm.png)",
    ):
        assert needle in text, needle


def test_card_is_deterministic_and_label_selection(run_dir):
    a = hub.assemble(run_dir["checkpoint"], REPO, run_dir["results"])
    b = hub.assemble(run_dir["checkpoint"], REPO, run_dir["results"])
    assert a == b  # no timestamps: the basis of the no-op re-publish
    summary = model_card.load_summary(run_dir["results"])
    assert model_card.select_label(summary, run_dir["checkpoint"]) == "celo"
    assert model_card.select_label(summary, "elsewhere/theta.state") == "celo"  # only learned one
    with pytest.raises(KeyError, match="not in the evaluation"):
        model_card.select_label(summary, run_dir["checkpoint"], label="velo")
    summary["optimizers"]["adam"]["checkpoint"] = "other/theta.state"
    with pytest.raises(KeyError, match="pass --label"):
        model_card.select_label(summary, "elsewhere/theta.state")
    with pytest.raises(FileNotFoundError, match="celo evaluate"):
        model_card.load_summary(str(run_dir["root"] / "nothing"))


def test_publish_creates_repo_uploads_and_republish_is_a_no_op(
    run_dir, fake_hub, monkeypatch, capsys
):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert REPO not in fake_hub.repos
    assert _publish(run_dir) == 0
    assert "published 7 files" in capsys.readouterr().out
    assert sorted(fake_hub.repos[REPO]) == sorted([".gitattributes", *EXPECTED_FILES])
    assert fake_hub.repos[REPO]["theta.state"] == Path(run_dir["checkpoint"]).read_bytes()
    assert fake_hub.lfs_files[REPO]["theta.state"]  # binary: went through git-LFS
    assert [c["message"] for c in fake_hub.history[REPO]][0] == "initial commit"
    assert len(fake_hub.history[REPO]) == 2
    writes = [r for r in fake_hub.requests if r["method"] == "POST" and "/api/" in r["path"]]
    assert len(writes) >= 4 and all(r["auth"] == f"Bearer {TOKEN}" for r in writes)

    # Read the card back from the Hub, as users of the repo will.
    card = ModelCard.load(
        hub.download(REPO, "README.md", token=TOKEN, cache_dir=str(run_dir["root"] / "cache"))
    )
    metrics = {r.metric_type for r in card.data.eval_results}
    assert {"iqm_final_loss", "iqm_speedup", "final_loss_score", "speedup_score"} <= metrics

    head = fake_hub.commits[REPO]
    assert _publish(run_dir) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert fake_hub.commits[REPO] == head and len(fake_hub.history[REPO]) == 2

    # A new checkpoint commits only what changed: theta.state (the card does not hash it).
    ckpt = Path(run_dir["checkpoint"])
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 1
    ckpt.write_bytes(bytes(data))
    assert _publish(run_dir) == 0
    assert len(fake_hub.history[REPO]) == 3
    assert fake_hub.history[REPO][-1]["files"] == ["theta.state"]


def test_wrong_token_gives_a_clear_401(run_dir, fake_hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTOKENxyz")
    assert _publish(run_dir) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "rejected the token" in err and REPO in err
    assert "hf_wrongTOKENxyz" not in err
    assert REPO not in fake_hub.repos


def test_missing_token_fails_before_any_request(run_dir, fake_hub, capsys, monkeypatch):
    monkeypatch.setattr("celo.commands.publish.DEFAULT_TOKEN_FILE", "/nonexistent/token")
    assert _publish(run_dir) == 1
    assert "no Hub token" in capsys.readouterr().err
    assert fake_hub.requests == []


def test_token_file_is_read_and_never_leaks(run_dir, fake_hub, tmp_path, capfd, caplog):
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")  # secrets mounted from Kubernetes end with a newline
    out = tmp_path / "out"
    # Debug level everywhere, huggingface_hub's own logger (level WARNING by default) included.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="huggingface_hub"):
        assert _publish(run_dir, "--token-file", str(token_file), "--out", str(out)) == 0
        assert _publish(run_dir, "--token-file", str(token_file)) == 0
    assert len(fake_hub.history[REPO]) == 2
    captured = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "debug logging captured nothing"
    for where, text in (("stdout", captured.out), ("stderr", captured.err), ("logs", logs)):
        assert TOKEN not in text, where
    for path in out.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # The token travels in Authorization headers only, never in a request body.
    assert not any(TOKEN.encode() in r["body"] for r in fake_hub.requests)
