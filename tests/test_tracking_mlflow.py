"""MlflowTracker against a real ``mlflow server`` on 127.0.0.1.

Covers the parent/child layout of a pipeline run, params, step metrics,
artifacts, model registration with an alias, secret redaction, and the
outage path: a stage keeps running when the server is gone, warns once,
spools everything, and the spool replays.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import pytest

mlflow = pytest.importorskip("mlflow")

from celo import cli  # noqa: E402
from celo.tracking_mlflow import MlflowTracker, TrackingUnavailableWarning, replay  # noqa: E402
from tests.fakes.mlflow_server import MlflowServer, free_port  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "hf_celoTestToken0123456789"


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    """MLflow may create ./mlflow.db as a default store: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(str(tmp_path_factory.mktemp("mlflow"))) as s:
        yield s


def _client(uri):
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _fake(monkeypatch, *argv) -> int:
    monkeypatch.setitem(cli.COMMANDS, "fake_stage", "tests.fakes.fake_stage")
    return cli.main(["fake_stage", *argv])


def _spool(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_pipeline_run_is_a_parent_with_a_child_per_stage(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    common = [
        "--mlflow-uri",
        server.uri,
        "--mlflow-experiment",
        "parent-child",
        "--pipeline-run-id",
        "run-123",
    ]
    assert (
        _fake(monkeypatch, "--out", str(tmp_path / "a"), "--stage", "meta_train_phase1", *common)
        == 0
    )
    assert (
        _fake(
            monkeypatch,
            "--out",
            str(tmp_path / "b"),
            "--stage",
            "meta_train_phase2",
            "--steps",
            "4",
            "--register-model",
            "celo-test",
            "--model-alias",
            "smoke",
            "--tracking-log",
            str(tmp_path / "b.jsonl"),
            *common,
        )
        == 0
    )

    c = _client(server.uri)
    exp = c.get_experiment_by_name("parent-child")
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("celo.role") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["celo.pipeline_run_id"] == "run-123"
    assert parent.info.run_name == "pipeline-run-123"
    assert parent.info.status == "FINISHED"
    children = {
        r.info.run_name: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert set(children) == {"meta_train_phase1", "meta_train_phase2"}
    child = children["meta_train_phase2"]
    assert child.info.status == "FINISHED"
    # config as params: what the command logged, and the command line
    assert child.data.params["steps"] == "4" and child.data.params["cli.steps"] == "4"
    history = c.get_metric_history(child.info.run_id, "meta_loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert [a.path for a in c.list_artifacts(child.info.run_id, "checkpoint")] == [
        "checkpoint/theta.state"
    ]
    # the parent summarises every stage's last values
    assert parent.data.metrics["meta_train_phase2/meta_loss"] == pytest.approx(0.25)
    assert parent.data.metrics["meta_train_phase1/meta_loss"] == pytest.approx(0.2)
    # the final checkpoint is a registered model version with an alias
    version = c.get_model_version_by_alias("celo-test", "smoke")
    assert version.run_id == child.info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server.uri)
    files = mlflow.artifacts.download_artifacts(
        "models:/celo-test@smoke", dst_path=str(tmp_path / "dl")
    )
    with open(os.path.join(files, "theta.state"), "rb") as f:
        assert f.read() == (tmp_path / "b" / "theta.state").read_bytes()
    # no secret value reaches MLflow or the log
    everything = json.dumps([r.data.params for r in runs] + [r.data.tags for r in runs])
    assert TOKEN not in everything
    assert TOKEN not in (tmp_path / "b.jsonl").read_text()


def test_secrets_are_redacted(server, tmp_path):
    t = MlflowTracker(
        server.uri,
        experiment="secrets",
        stage="publish",
        secrets=[TOKEN],
        spool_path=str(tmp_path / "log.jsonl"),
    )
    t.log_params(
        {
            "hf_token": "abc",
            "repo_id": "org/x",
            "header": f"Bearer {TOKEN}",
            "gcs_credentials": "/var/secrets/key.json",
        }
    )
    t.close()
    params = _client(server.uri).get_run(t.run_id).data.params
    assert params == {
        "hf_token": "***",
        "repo_id": "org/x",
        "header": "Bearer ***",
        "gcs_credentials": "***",
    }
    assert TOKEN not in (tmp_path / "log.jsonl").read_text()


def test_unreachable_server_warns_once_and_spools(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = _fake(
            monkeypatch,
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "6",
            "--mlflow-uri",
            f"http://127.0.0.1:{free_port()}",
            "--tracking-log",
            str(log),
            "--pipeline-run-id",
            "offline",
        )
    assert rc == 0
    assert time.time() - t0 < 60
    ours = [w for w in caught if issubclass(w.category, TrackingUnavailableWarning)]
    assert len(ours) == 1 and "unreachable" in str(ours[0].message)
    records = _spool(log)
    assert [r["step"] for r in records if r["type"] == "metrics"] == list(range(6))
    assert any(r["type"] == "artifact" and r["path"].endswith("theta.state") for r in records)
    assert records[-1] == {**records[-1], "type": "close", "status": "FINISHED"}
    assert (tmp_path / "out" / "theta.state").exists()


def test_failed_stage_marks_run_and_pipeline_failed(server, tmp_path, monkeypatch):
    args = ["--mlflow-uri", server.uri, "--mlflow-experiment", "fails", "--pipeline-run-id", "f1"]
    assert _fake(monkeypatch, "--out", str(tmp_path / "a"), "--fail", *args) == 1
    c = _client(server.uri)
    runs = c.search_runs([c.get_experiment_by_name("fails").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]


def test_stage_survives_server_stop_and_spool_replays(tmp_path):
    srv = MlflowServer(str(tmp_path / "srv")).start()
    try:
        out, log = tmp_path / "out", tmp_path / "log.jsonl"
        code = (
            "import sys, celo.cli as c; c.COMMANDS['fake_stage'] = 'tests.fakes.fake_stage';"
            "sys.exit(c.main(sys.argv[1:]))"
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "fake_stage",
                "--out",
                str(out),
                "--steps",
                "40",
                "--sleep",
                "0.2",
                "--mlflow-uri",
                srv.uri,
                "--mlflow-experiment",
                "outage",
                "--pipeline-run-id",
                "p-outage",
                "--stage",
                "meta_train_phase1",
                "--tracking-log",
                str(log),
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            p = out / "progress"
            if p.exists() and p.read_text() and int(p.read_text()) >= 4:
                break
            time.sleep(0.1)
        srv.stop()  # mid-run
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert stderr.count("TrackingUnavailableWarning") == 1, stderr
        assert (out / "theta.state").exists()
        records = _spool(log)
        assert [r["step"] for r in records if r["type"] == "metrics"] == list(range(40))

        srv.start()
        c = _client(srv.uri)
        exp = c.get_experiment_by_name("outage")
        stage = [
            r for r in c.search_runs([exp.experiment_id]) if r.info.run_name == "meta_train_phase1"
        ][0]
        logged = c.get_metric_history(stage.info.run_id, "meta_loss")
        assert 1 <= len(logged) < 40  # what got through before the stop
        again = MlflowTracker(
            srv.uri,
            experiment="outage",
            stage="meta_train_phase1-replayed",
            pipeline_run_id="p-outage",
        )
        assert replay(str(log), again) == len(records)
        again.close()
        history = c.get_metric_history(again.run_id, "meta_loss")
        assert [m.step for m in history] == list(range(40))
        assert [a.path for a in c.list_artifacts(again.run_id, "checkpoint")] == [
            "checkpoint/theta.state"
        ]

        # in-process: the server goes away and comes back before close: the backlog is sent
        t = MlflowTracker(srv.uri, experiment="outage", stage="comes-back")
        t.log_metrics({"meta_loss": 3.0}, step=0)
        srv.stop()
        with pytest.warns(TrackingUnavailableWarning):
            t.log_metrics({"meta_loss": 2.0}, step=1)
        t.log_metrics({"meta_loss": 1.0}, step=2)
        assert not t.online
        srv.start()
        t.close()
        run = c.get_run(t.run_id)
        assert run.info.status == "FINISHED"
        assert [m.value for m in c.get_metric_history(t.run_id, "meta_loss")] == [3.0, 2.0, 1.0]
    finally:
        srv.stop()


def _train_has_tracking_flags() -> bool:
    if "train" not in cli._available():
        return False
    parser = cli.build_parser(only="train")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return "--tracking-log" in sub.choices["train"]._option_string_actions


def test_meta_training_survives_server_stop(tmp_path, data_dir):
    """The real stage: ``celo train --preset smoke`` loses its server after the first metrics."""
    if not _train_has_tracking_flags():
        pytest.skip("`celo train` has no tracking flags yet (celo.cli.add_tracking_args)")
    srv = MlflowServer(str(tmp_path / "srv")).start()
    log = tmp_path / "log.jsonl"
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celo",
                "train",
                "--preset",
                "smoke",
                "--outer_iterations",
                "20",
                "--experiment_root",
                str(tmp_path / "exp"),
                "--exp_id",
                "outage",
                "--data_dir",
                str(data_dir),
                "--mlflow-uri",
                srv.uri,
                "--mlflow-experiment",
                "outage",
                "--pipeline-run-id",
                "p-train",
                "--stage",
                "meta_train_phase1",
                "--tracking-log",
                str(log),
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and any(r["type"] == "metrics" for r in _spool(log)):
                break
            time.sleep(0.05)
        srv.stop()  # after the first metrics, before the end of training
        _, stderr = proc.communicate(timeout=600)
    finally:
        srv.stop()
    assert proc.returncode == 0, stderr[-3000:]
    assert stderr.count("TrackingUnavailableWarning") == 1, stderr[-3000:]
    assert (tmp_path / "exp" / "train" / "outage" / "theta.state").exists()
    records = _spool(log)
    steps = [r["step"] for r in records if r["type"] == "metrics"]
    assert steps == list(range(1, 20, 2))  # every logged iteration is in the stage's log
    assert any(r["type"] == "artifact" and r["path"].endswith("theta.state") for r in records)
    assert records[-1]["type"] == "close" and records[-1]["status"] == "FINISHED"
