"""The whole DAG at smoke scale with kfp.local, tracked by a real ``mlflow server``.

``celo pipeline run --local --preset smoke`` runs the committed
``pipelines/celo_full.yaml``; afterwards ``MlflowClient`` must find one parent
run with a child per stage, the meta-loss history, the evaluation scores, the
artifacts and a registered model version with the smoke alias.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("kfp")

from celo import cli  # noqa: E402
from tests.fakes.mlflow_server import MlflowServer  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = os.path.join(ROOT, "pipelines", "celo_full.yaml")
STAGES = {"meta_train_phase1", "meta_train_phase2", "evaluate", "algoperf_eval", "publish"}
#: The smoke DAG must stay well inside CI time on 2 cores.
BUDGET_S = 300


def _require_stage_commands():
    missing = []
    for command, sub in (
        ("train", None),
        ("evaluate", None),
        ("algoperf", "run"),
        ("publish", None),
    ):
        if command not in cli._available():
            missing.append(f"`celo {command}` is missing")
            continue
        parser = cli.build_parser(only=command)
        for word in [command] + ([sub] if sub else []):
            action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = action.choices[word]
        if "--tracking-log" not in parser._option_string_actions:
            missing.append(f"`celo {command}` has no tracking flags")
    if missing:
        pytest.skip("; ".join(missing))


def test_smoke_dag_is_tracked_in_mlflow(tmp_path, monkeypatch, capsys, data_dir):
    _require_stage_commands()
    with MlflowServer(str(tmp_path / "mlflow")) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.chdir(tmp_path)
        t0 = time.time()
        rc = cli.main(
            [
                "pipeline",
                "run",
                "--local",
                "--preset",
                "smoke",
                "-f",
                FULL,
                "--pipeline-root",
                str(tmp_path / "outputs"),
            ]
        )
        seconds = time.time() - t0
        out = capsys.readouterr().out
        assert rc == 0, out
        assert f"MLflow tracking URI: {server.uri}" in out
        assert "IQM final-loss score" in out
        assert seconds < BUDGET_S, f"smoke DAG took {seconds:.0f} s"

        c = mlflow.MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
        exp = c.get_experiment_by_name("celo-smoke")
        runs = c.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("celo.role") == "pipeline"]
        assert len(parents) == 1
        parent = parents[0]
        children = {
            r.info.run_name: r
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert set(children) == STAGES
        assert all(r.info.status == "FINISHED" for r in children.values())
        assert parent.info.status == "FINISHED"

        # meta-training: config as params, the meta-loss per outer iteration, the checkpoint
        for phase in ("meta_train_phase1", "meta_train_phase2"):
            run = children[phase]
            assert run.data.params["cli.exp_id"] == f"phase{phase[-1]}"
            assert run.data.params["optimizer"] == {"1": "celo_phase1", "2": "celo"}[phase[-1]]
            key = next(k for k in run.data.metrics if k.endswith("meta_loss"))
            history = c.get_metric_history(run.info.run_id, key)
            assert len(history) >= 2 and len({m.step for m in history}) == len(history)
            files = [a.path for a in c.list_artifacts(run.info.run_id)]
            files += [a.path for a in c.list_artifacts(run.info.run_id, "checkpoint")]
            assert any(f.endswith("theta.state") for f in files), files
        # evaluation scores per task and the IQM
        scores = children["evaluate"].data.metrics
        assert "eval/celo/iqm_final_loss" in scores
        assert any(k.startswith("eval/celo/") and k.endswith("/final_loss_score") for k in scores)
        assert any(k.startswith("evaluate/eval/celo/iqm") for k in parent.data.metrics)
        # the final checkpoint is a registered model version with the smoke alias
        version = c.get_model_version_by_alias("celo", "smoke")
        assert version.run_id == children["meta_train_phase2"].info.run_id

    # task outputs: typed artifacts on disk
    run_dir = max((tmp_path / "outputs").iterdir())
    summary = next(run_dir.rglob("evaluate/results/summary.json"))
    assert "celo" in json.loads(summary.read_text())["optimizers"]
    assert next(run_dir.rglob("evaluate/report")).read_text().startswith("<html>")
    card = next(run_dir.rglob("publish/card"))
    assert (card / "theta.state").exists() and (card / "README.md").exists()


def test_reeval_evaluates_the_others_and_names_the_missing_checkpoint(
    tmp_path, monkeypatch, capsys, data_dir
):
    """reeval.yaml locally: one good checkpoint, one that cannot be downloaded."""
    parser = cli.build_parser(only="evaluate")
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "--tracking-log" not in action.choices["evaluate"]._option_string_actions:
        pytest.skip("`celo evaluate` has no tracking flags yet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the missing repo fails at once, without network
    good = os.path.join(ROOT, "tests", "fixtures", "checkpoints", "celo", "theta.state")
    rc = cli.main(
        [
            "pipeline",
            "run",
            "--local",
            "-f",
            os.path.join(ROOT, "pipelines", "reeval.yaml"),
            "--pipeline-root",
            str(tmp_path / "outputs"),
            "--mlflow-experiment",
            "celo-reeval",
            f'checkpoints=["{good}", "nobody/missing-checkpoint"]',
            "suite=fast_velo",
            "steps=10",
            "lrs=0.001",
            "workers=1",
            "reps=100",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1  # the run fails ...
    assert "FAILED" in out and "nobody/missing-checkpoint" in out  # ... naming the checkpoint
    comparison = json.loads(next((tmp_path / "outputs").rglob("comparison.json")).read_text())
    assert [r["optimizer"] for r in comparison["rows"]] == ["celo", "adam"]  # the other one ran
    assert [f["source"] for f in comparison["failed"]] == [
        "missing-checkpoint:celo=hf://nobody/missing-checkpoint"
    ]
    error = comparison["failed"][0]["error"]
    assert "cannot use checkpoint 'hf://nobody/missing-checkpoint'" in error, error
    assert "not in the local cache" in error, error  # the Hub's reason, not a traceback
    c = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
    runs = c.search_runs([c.get_experiment_by_name("celo-reeval").experiment_id])
    names = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert names == ["compare", f"evaluate {good}", "evaluate nobody/missing-checkpoint"]
