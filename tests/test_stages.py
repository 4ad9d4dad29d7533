"""The stage runner behind the components, and the comparison of evaluations."""

from __future__ import annotations

import json
import os

import pytest

from celo import cli, comparison, stages


class FakeMetrics:
    def __init__(self, path=""):
        self.path, self.logged = path, {}

    def log_metric(self, key, value):
        self.logged[key] = value


def test_build_argv_leaves_out_empty_values():
    argv = stages.build_argv(
        "algoperf run",
        {
            "--a": "x",
            "--b": None,
            "--c": "",
            "--d": [],
            "--e": False,
            "--f": True,
            "--g": ["1", 2],
            "--h": 0,
        },
    )
    assert argv == ["algoperf", "run", "--a", "x", "--f", "--g", "1", "2", "--h", "0"]


def test_theta_in_finds_the_checkpoint(tmp_path):
    (tmp_path / "train" / "phase2").mkdir(parents=True)
    (tmp_path / "train" / "phase2" / "theta.state").write_bytes(b"x")
    assert stages.theta_in(str(tmp_path)) == str(tmp_path / "train" / "phase2" / "theta.state")
    (tmp_path / "theta.state").write_bytes(b"y")
    assert stages.theta_in(str(tmp_path)) == str(tmp_path / "theta.state")
    with pytest.raises(FileNotFoundError, match="found 0"):
        stages.theta_in(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "given, spec",
    [
        ("amoudgl/celo", "celo:celo=hf://amoudgl/celo"),
        ("amoudgl/rnn-mlp-lopt", "rnn-mlp-lopt:rnn_mlp=hf://amoudgl/rnn-mlp-lopt"),
        ("someone/my-run", "my-run:celo=hf://someone/my-run"),
        ("hf://amoudgl/celo-adam", "celo-adam:celo_adam=hf://amoudgl/celo-adam"),
        ("mine:celo=gs://b/theta.state", "mine:celo=gs://b/theta.state"),
        ("/tmp/x/theta.state", "celo=/tmp/x/theta.state"),
    ],
)
def test_checkpoint_spec(given, spec):
    assert stages.checkpoint_spec(given) == spec


def test_checkpoint_spec_rejects_nonsense():
    with pytest.raises(ValueError, match="owner/repo"):
        stages.checkpoint_spec("just-a-name")


def test_run_stage_fills_metrics_and_report(tmp_path, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "fake_stage", "tests.fakes.fake_stage")
    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    (out / "plots").mkdir(parents=True)
    (out / "tables.md").write_text("| a | b |\n")
    (out / "plots" / "p.png").write_bytes(b"\x89PNG")
    metrics, report = FakeMetrics(), FakeMetrics(str(tmp_path / "report.html"))
    stages.run_stage(
        "fake_stage",
        {"--out": str(out), "--steps": 3, "--tracking-log": str(log), "--mlflow-uri": "none"},
        metrics=metrics,
        report=report,
        report_from=str(out),
    )
    assert metrics.logged == {"meta_loss": pytest.approx(1 / 3), "grad_norm": 0.5}
    page = (tmp_path / "report.html").read_text()
    assert "| a | b |" in page and "data:image/png;base64," in page


def test_run_stage_raises_or_records_a_failure(tmp_path, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "fake_stage", "tests.fakes.fake_stage")
    flags = {"--out": str(tmp_path / "o"), "--steps": 1, "--fail": True, "--mlflow-uri": "none"}
    with pytest.raises(RuntimeError, match="celo fake_stage exited with status 1"):
        stages.run_stage("fake_stage", flags)
    stages.run_stage("fake_stage", flags, soft_fail_dir=str(tmp_path / "res"))
    record = json.loads((tmp_path / "res" / "error.json").read_text())
    assert record["error"] == "celo fake_stage exited with status 1"
    assert record["command"][:3] == ["fake_stage", "--out", str(tmp_path / "o")]


def _summary(folder, label, iqm):
    os.makedirs(folder, exist_ok=True)
    summary = {
        "config": {"reference": "adam"},
        "optimizers": {
            label: {
                "iqm_final_loss": iqm,
                "iqm_final_loss_ci": [iqm - 0.1, iqm + 0.1],
                "iqm_speedup": 2 * iqm,
                "iqm_speedup_ci": [iqm, 3 * iqm],
                "per_task": {"t1": {}, "t2": {}},
            },
            "adam": {
                "iqm_final_loss": 1.0,
                "iqm_final_loss_ci": [1.0, 1.0],
                "iqm_speedup": 1.0,
                "iqm_speedup_ci": [1.0, 1.0],
                "per_task": {"t1": {}, "t2": {}},
            },
        },
    }
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)


def test_compare_lists_every_checkpoint_and_fails_on_a_missing_one(tmp_path, capsys):
    _summary(tmp_path / "a" / "results", "celo", 1.2)
    _summary(tmp_path / "b" / "results", "celo-adam", 1.1)
    failed = tmp_path / "c" / "results"
    _summary(failed, "nobody", 0.5)  # a partial summary of a failed run is not used
    (failed / "error.json").write_text(
        json.dumps(
            {
                "command": [
                    "evaluate",
                    "--optimizers",
                    "nobody:nobody=hf://nobody/missing",
                    "adam",
                ],
                "error": "celo evaluate exited with status 2",
            }
        )
    )
    rc = cli.main(
        [
            "pipeline",
            "compare",
            "--results",
            str(tmp_path / "a" / "results"),
            str(tmp_path / "b" / "results"),
            str(failed),
            "--output",
            str(tmp_path / "cmp"),
            "--mlflow-uri",
            "none",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert (
        "FAILED nobody:nobody=hf://nobody/missing: celo evaluate exited with status 2"
        in captured.err
    )
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [(r["optimizer"], r["iqm_final_loss"]) for r in table["rows"]] == [
        ("celo", 1.2),
        ("adam", 1.0),
        ("celo-adam", 1.1),
    ]  # the reference once
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| celo | 1.200 [1.100, 1.300] | 2.400 [1.200, 3.600] | 2 |" in md
    assert "adam (tuned reference)" in md and "FAILED" in md
    assert comparison.render(table) in captured.out
