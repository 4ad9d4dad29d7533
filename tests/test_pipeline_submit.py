"""Submit and schedule paths, as a contract against a loopback stub of the KFP v2 API.

The stub records request bodies; the tests assert the experiment, the inline
pipeline spec (both YAML documents), the typed parameters, the cron trigger and
the ENABLE mode. A real cluster remains the real test of what the backend does
with them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("kfp")
yaml = pytest.importorskip("yaml")

from celo import cli  # noqa: E402
from tests.fakes.kfp_api import KfpApiStub  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = os.path.join(ROOT, "pipelines", "celo_full.yaml")
REEVAL = os.path.join(ROOT, "pipelines", "reeval.yaml")


@pytest.fixture
def api(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))  # the kfp client may write a config file there
    with KfpApiStub() as stub:
        yield stub


def _docs(path):
    with open(path) as f:
        return list(yaml.safe_load_all(f))


def _kfp_cli(api, *args):
    exe = shutil.which("kfp", path=os.path.dirname(sys.executable))
    return subprocess.run(
        [exe, "--endpoint", api.url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": os.getcwd()},
    )


def _assert_spec(body, path):
    spec, platform = _docs(path)
    assert body["pipeline_spec"]["pipeline_spec"] == spec
    assert body["pipeline_spec"]["platform_spec"] == platform


def test_celo_pipeline_submit_sends_typed_parameters(api):
    rc = cli.main(
        [
            "pipeline",
            "submit",
            "--host",
            api.url,
            "-e",
            "celo",
            "-r",
            "smoke-1",
            "-f",
            "pipelines/celo_full.yaml",
            "phase1_preset=smoke",
            "eval_steps=20",
            "eval_lrs=0.001",
            "publish=true",
            "publish_repo_id=org/celo-x",
        ]
    )
    assert rc == 0
    assert [e["display_name"] for e in api.posted("experiments")] == ["celo"]
    (run,) = api.posted("runs")
    (exp_id,) = api.experiments
    assert run["experiment_id"] == exp_id
    assert run["display_name"] == "smoke-1"
    _assert_spec(run, FULL)
    assert run["runtime_config"]["parameters"] == {
        "phase1_preset": "smoke",
        "eval_steps": 20,
        "eval_lrs": "0.001",
        "publish": True,
        "publish_repo_id": "org/celo-x",
    }


def test_submit_reuses_an_existing_experiment(api):
    for _ in range(2):
        assert cli.main(["pipeline", "submit", "--host", api.url, "-e", "celo"]) == 0
    assert len(api.posted("experiments")) == 1
    assert len({r["experiment_id"] for r in api.posted("runs")}) == 1


def test_unknown_or_mistyped_parameter_sends_nothing(api, capsys):
    assert cli.main(["pipeline", "submit", "--host", api.url, "phase3_preset=x"]) == 2
    assert "'phase3_preset' is not a parameter" in capsys.readouterr().err
    assert cli.main(["pipeline", "submit", "--host", api.url, "eval_steps=many"]) == 2
    assert "eval_steps='many'" in capsys.readouterr().err
    assert api.posted("runs") == []


def test_readme_kfp_run_submit_line(api):
    out = _kfp_cli(
        api,
        "run",
        "submit",
        "-e",
        "celo",
        "-r",
        "celo-run",
        "-f",
        "pipelines/celo_full.yaml",
        "phase1_seed=3",
        "publish_repo_id=org/x",
    )
    assert out.returncode == 0, out.stderr
    (run,) = api.posted("runs")
    _assert_spec(run, FULL)
    assert run["display_name"] == "celo-run"
    assert run["runtime_config"]["parameters"] == {"phase1_seed": 3, "publish_repo_id": "org/x"}


def test_celo_pipeline_schedule_creates_an_enabled_weekly_reeval(api):
    rc = cli.main(
        [
            "pipeline",
            "schedule",
            "--host",
            api.url,
            "--cron",
            "0 0 3 * * 1",
            "--checkpoints",
            "amoudgl/celo,amoudgl/celo-adam",
            "suite=velodrome17",
        ]
    )
    assert rc == 0
    assert [e["display_name"] for e in api.posted("experiments")] == ["celo-reeval"]
    (job,) = api.posted("recurringruns")
    assert job["experiment_id"] == next(iter(api.experiments))
    assert job["mode"] == "ENABLE"
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert job["no_catchup"] is True and int(job["max_concurrency"]) == 1
    _assert_spec(job, REEVAL)
    assert job["runtime_config"]["parameters"] == {
        "checkpoints": ["amoudgl/celo", "amoudgl/celo-adam"],
        "mlflow_experiment": "celo-reeval",
        "suite": "velodrome17",
    }


def test_schedule_rejects_a_five_field_cron(api, capsys):
    rc = cli.main(
        [
            "pipeline",
            "schedule",
            "--host",
            api.url,
            "--cron",
            "0 3 * * 1",
            "--checkpoints",
            "amoudgl/celo",
        ]
    )
    assert rc == 2
    assert "6 fields" in capsys.readouterr().err
    assert api.posted("recurringruns") == []


def test_readme_kfp_recurring_run_line(api):
    out = _kfp_cli(
        api,
        "recurring-run",
        "create",
        "--experiment-name",
        "celo-reeval",
        "--job-name",
        "celo-reeval-weekly",
        "--pipeline-package-path",
        "pipelines/reeval.yaml",
        "--cron-expression",
        "0 0 3 * * 1",
        "--enabled",
        "suite=velodrome17",
    )
    assert out.returncode == 0, out.stderr
    (job,) = api.posted("recurringruns")
    assert job["mode"] == "ENABLE"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    _assert_spec(job, REEVAL)
    # the kfp CLI sends recurring-run parameters as strings (hence `celo pipeline schedule`)
    assert job["runtime_config"]["parameters"] == {"suite": "velodrome17"}


def _schedule(api, *extra):
    return cli.main(
        [
            "pipeline",
            "schedule",
            "--host",
            api.url,
            "--cron",
            "0 0 3 * * 1",
            "--checkpoints",
            "amoudgl/celo",
            *extra,
        ]
    )


def test_schedule_is_idempotent_by_name_and_replace_updates_it(api, capsys):
    assert _schedule(api, "--run-name", "weekly") == 0
    assert _schedule(api, "--run-name", "weekly") == 0  # e.g. the manifests re-applied
    assert len(api.posted("recurringruns")) == 1
    assert "already exists" in capsys.readouterr().out
    assert _schedule(api, "--run-name", "weekly", "--replace", "suite=fast_velo") == 0
    assert len(api.recurring_runs) == 1
    (job,) = api.recurring_runs.values()
    assert job["runtime_config"]["parameters"]["suite"] == "fast_velo"
    assert [r["method"] for r in api.requests].count("DELETE") == 1
    assert _schedule(api, "--run-name", "other") == 0  # another name is another schedule
    assert len(api.recurring_runs) == 2


def test_service_account_reaches_runs_and_schedules(api):
    assert _schedule(api, "--service-account", "celo-pipeline") == 0
    (job,) = api.posted("recurringruns")
    assert job["service_account"] == "celo-pipeline"
    rc = cli.main(
        [
            "pipeline",
            "submit",
            "--host",
            api.url,
            "-f",
            "pipelines/celo_full.yaml",
            "--service-account",
            "celo-pipeline",
        ]
    )
    assert rc == 0
    (run,) = api.posted("runs")
    assert run["service_account"] == "celo-pipeline"
