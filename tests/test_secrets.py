"""No secret value reaches a compiled pipeline, a manifest, a log line or an MLflow param.

A recognisable fake token is put where a real one would be (``HF_TOKEN``, a
mounted token file) and every place the release path writes is searched for
it. Secrets are referenced by Kubernetes name only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from celo import checkpoints
from tests.conftest import CHECKPOINTS, FIXTURES

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_SECRETcanaryQ9x7TOKENvalue0123456789"
#: Shapes of real credentials: Hugging Face tokens, service-account keys.
CREDENTIAL = re.compile(r"hf_[A-Za-z0-9]{30,}|-----BEGIN [A-Z ]*PRIVATE KEY|\"private_key\"")

pytestmark = pytest.mark.integration


def _texts(paths) -> dict[str, str]:
    return {str(p): Path(p).read_text(errors="replace") for p in paths}


def test_compiled_pipelines_reference_secrets_by_name_only(tmp_path, monkeypatch):
    pytest.importorskip("kfp")
    from pipelines import compile as compile_mod
    from pipelines import platform

    # A token in the compiling process's environment must not be captured.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fresh = compile_mod.compile_to(str(tmp_path))
    committed = sorted((ROOT / "pipelines").glob("*.yaml"))
    assert committed, "no compiled pipelines"
    for path, text in _texts([*fresh, *committed]).items():
        assert TOKEN not in text, path
        assert not CREDENTIAL.search(text), path
    gpu = list(yaml.safe_load_all((ROOT / "pipelines" / "celo_full_gpu.yaml").read_text()))
    executors = gpu[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    refs = [s for e in executors.values() for s in e.get("secretAsEnv", [])]
    assert refs and all(r["secretName"] == platform.HF_SECRET for r in refs)
    assert all(k["envVar"] == "HF_TOKEN" for r in refs for k in r["keyToEnv"])


def test_manifests_hold_no_secret_values():
    texts = _texts(p for p in (ROOT / "manifests").rglob("*") if p.is_file())
    for path, text in texts.items():
        assert TOKEN not in text, path
        assert not CREDENTIAL.search(text), path
    kustomize = shutil.which("kustomize") or shutil.which("kubectl")
    if kustomize:
        cmd = [kustomize, "build"] if kustomize.endswith("kustomize") else [kustomize, "kustomize"]
        out = subprocess.run(
            [*cmd, str(ROOT / "manifests/overlays/gke")], capture_output=True, text=True, check=True
        ).stdout
        assert "kind: Secret" not in out  # secrets are created by hand, never rendered


@pytest.fixture
def smoke_run(tmp_path):
    ckpt = tmp_path / "train" / "theta.state"
    checkpoints.save_state(
        str(ckpt),
        checkpoints.load_raw(str(CHECKPOINTS / "celo" / "theta.state")),
        optimizer_name="celo",
        config={"outer_lr": 1e-4},
    )
    results = tmp_path / "eval"
    results.mkdir()
    summary = (FIXTURES / "eval_summary" / "summary.json").read_text()
    (results / "summary.json").write_text(summary.replace('"CHECKPOINT"', json.dumps(str(ckpt))))
    return ckpt, results


def test_publish_logs_tracking_and_mlflow_params_never_hold_the_token(smoke_run, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from tests.fakes.fake_hub import FakeHub

    ckpt, results = smoke_run
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with FakeHub(token=TOKEN) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_DEBUG": "1",
            "HF_HUB_VERBOSITY": "debug",
            "HF_TOKEN": TOKEN,
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        # One process, debug logging on everywhere (the token-file path is in test_publish.py).
        cmd = [
            sys.executable,
            "-m",
            "celo.cli",
            "publish",
            "--checkpoint",
            str(ckpt),
            "--results",
            str(results),
            "--repo-id",
            "celo-org/secret-test",
            "--out",
            str(tmp_path / "out"),
            "--mlflow-uri",
            db,
            "--mlflow-experiment",
            "secrets",
            "--tracking-log",
            str(tmp_path / "track.jsonl"),
        ]
        runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)]
        assert runs[0].returncode == 0, runs[0].stderr[-3000:]
        assert len(hub.history["celo-org/secret-test"]) == 2  # created, then published
    for r in runs:
        assert TOKEN not in r.stdout and TOKEN not in r.stderr
    assert TOKEN not in (tmp_path / "track.jsonl").read_text()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    client = mlflow.tracking.MlflowClient(db)
    exp = client.get_experiment_by_name("secrets")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == 1
    for run in found:
        assert run.data.params, "publish logged no params"
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert TOKEN not in value and TOKEN not in key, key
        assert run.data.params.get("cli.repo_id") == "celo-org/secret-test"
