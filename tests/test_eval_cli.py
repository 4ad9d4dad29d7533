"""``celo evaluate`` end to end (small), resuming, the worker pool, and ``python -m celo.test``."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from tqdm import tqdm

from celo import cli
from celo.evaluation import cells, executor, scoring, specs
from tests.conftest import CHECKPOINTS

CELO = CHECKPOINTS / "celo" / "theta.state"
TASKS = ["ImageMLPAE_Mnist_128x32x128_bs128", "ImageMLP_FashionMnist_Relu128x128"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_parse_optimizer_forms():
    s = specs.parse_optimizer("adam", [1e-3, 3e-4])
    assert (s.label, s.name, s.checkpoint, s.learned) == ("adam", "adam", None, False)
    assert s.tags() == ["lr_1e-03", "lr_3e-04"]
    s = specs.parse_optimizer("celo=hf://amoudgl/celo")
    assert (s.label, s.name, s.checkpoint, s.tags()) == (
        "celo",
        "celo",
        "hf://amoudgl/celo",
        ["theta"],
    )
    s = specs.parse_optimizer("mine:celo-adam=runs/x/theta.state")
    assert (s.label, s.name, s.checkpoint) == ("mine", "celo_adam", "runs/x/theta.state")
    s = specs.parse_optimizer("sgd@0.01,0.1,1", [1e-3])  # its own grid wins
    assert (s.label, s.name, s.lrs, s.tags()) == (
        "sgd",
        "sgd",
        (0.01, 0.1, 1.0),
        ["lr_1e-02", "lr_1e-01", "lr_1e+00"],
    )
    s = specs.parse_optimizer("fast:sgdm@3e-2")
    assert (s.label, s.name, s.lrs) == ("fast", "sgdm", (0.03,))
    for bad, reason in [
        ("sgd@", "positive numbers"),
        ("sgd@0.1,x", "positive numbers"),
        ("sgd@-1", "positive numbers"),
        ("sgd@0.1,0.1", "repeats"),
        ("celo@0.1=x.state", "takes no learning-rate grid"),
    ]:
        with pytest.raises(ValueError, match=reason):
            specs.parse_optimizer(bad)
    with pytest.raises(ValueError, match="needs its meta-parameters"):
        specs.parse_optimizer("celo")
    with pytest.raises(ValueError, match="takes no checkpoint"):
        specs.parse_optimizer("adam=x.state")
    assert specs.DEFAULT_LR_GRID[0] == pytest.approx(1e-5) and specs.DEFAULT_LR_GRID[-1] == 1.0
    assert len(specs.DEFAULT_LR_GRID) == 11


@pytest.mark.parametrize(
    "spec, reason",
    [
        ("celo={missing}", "No such file"),
        ("celo=hf://nobody/no-such-celo", "not in the local cache"),
        ("celo_adam={celo}", "does not match the optimizer's theta"),
    ],
)
def test_unusable_checkpoint_fails_before_any_cell(tmp_path, monkeypatch, capsys, spec, reason):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = spec.format(missing=tmp_path / "missing.state", celo=CELO)
    argv = ["evaluate", "--optimizers", spec, "adam", "--tasks", TASKS[0], "--steps", "5"]
    code = cli.main([*argv, "--output", str(tmp_path / "eval"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot use checkpoint" in err and reason in err, err
    assert not (tmp_path / "eval" / "cells").exists()


def _evaluate(tmp_path, *extra):
    argv = [
        "evaluate",
        "--optimizers",
        f"celo={CELO}",
        "adam",
        "sgdm",
        "--tasks",
        *TASKS,
        "--steps",
        "20",
        "--lrs",
        "1e-3",
        "1e-2",
        "--seeds",
        "0",
        "--output",
        str(tmp_path / "eval"),
        "--workers",
        "1",
        "--reps",
        "200",
        "--no-progress",
        *extra,
    ]
    code = cli.main(argv)
    return code, json.loads((tmp_path / "eval" / "summary.json").read_text())


def test_evaluate_small_writes_everything_and_resumes(tmp_path, data_dir):
    track = tmp_path / "track.jsonl"
    code, summary = _evaluate(tmp_path, "--tracking-log", str(track))
    assert code == 0
    out = tmp_path / "eval"
    assert summary["tasks_aggregated"] == TASKS
    for label in ("celo", "adam", "sgdm"):
        o = summary["optimizers"][label]
        for key in ("iqm_final_loss", "iqm_speedup"):
            lo, hi = o[f"{key}_ci"]
            assert lo <= o[key] <= hi
        for task in TASKS:
            e = o["per_task"][task]
            assert e["final_loss_score"] >= 0 and e["speedup_score"] >= 0
            assert e["seconds_per_step"] > 0
            curve = cells.load_npz(str(out / "curves" / label / task / "seed_0.npz"))
            assert curve["train/loss"].shape == (20,)
            assert {"eval/xs", "eval/test/loss", "eval/outer_valid/loss_normalized"} <= curve.keys()
    # The tuned reference scores exactly 1 against itself.
    for e in summary["optimizers"]["adam"]["per_task"].values():
        assert e["final_loss_score"] == 1.0 and e["speedup_score"] == 1.0
    # Scores agree with the saved curves: sgdm's chosen LR is its best, scored against adam's.
    ref = json.loads((out / "reference_adam.json").read_text())
    for task in TASKS:
        r = ref["per_task"][task]
        assert set(r["sweep"]) == {"lr_1e-03", "lr_1e-02"} and r["learning_rate"] in (1e-3, 1e-2)
        adam = scoring.ema(
            cells.load_npz(str(out / "curves/adam" / task / "seed_0.npz"))["train/loss"]
        )
        sgdm = scoring.ema(
            cells.load_npz(str(out / "curves/sgdm" / task / "seed_0.npz"))["train/loss"]
        )
        e = summary["optimizers"]["sgdm"]["per_task"][task]
        assert e["final_loss_score"] == pytest.approx(scoring.final_loss_score(sgdm, adam))
        assert e["final_loss"] == pytest.approx(min(v for v in e["sweep"].values() if v))
    for name in ["curves_all.png", "iqm.png", "profiles.png", *(f"curves_{t}.png" for t in TASKS)]:
        assert (out / "plots" / name).read_bytes()[:8] == PNG
    assert "Speedup score per task" in (out / "tables.md").read_text()
    logged = [json.loads(line) for line in track.read_text().splitlines()]
    metrics = next(r["metrics"] for r in logged if r["type"] == "metrics")
    assert metrics["eval/celo/iqm_final_loss"] == summary["optimizers"]["celo"]["iqm_final_loss"]
    assert sum(r["type"] == "artifact" for r in logged) == len(summary["plots"])

    # --report-only scores finished cells without running any, into another folder.
    code, _ = _evaluate(tmp_path, "--report-only", "--report-dir", str(tmp_path / "rep"))
    report = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert report["run"]["cells"] == {"done": 0, "skipped": 0, "error": 0}
    assert report["optimizers"]["celo"]["per_task"] == summary["optimizers"]["celo"]["per_task"]
    assert (tmp_path / "rep" / "plots" / "iqm.png").exists()

    # Resume: nothing left to do, the same scores; a lost cell is the only one rerun.
    (out / "cells/sgdm" / TASKS[0] / "seed_0" / "lr_1e-02.json").unlink()
    t0 = time.perf_counter()
    code, again = _evaluate(tmp_path)
    assert code == 0
    assert again["run"]["cells"] == {"done": 1, "skipped": 9, "error": 0}
    for label in ("celo", "adam", "sgdm"):
        assert again["optimizers"][label]["iqm_final_loss"] == pytest.approx(
            summary["optimizers"][label]["iqm_final_loss"]
        )
    assert time.perf_counter() - t0 < 120


def test_resume_refuses_a_different_configuration(tmp_path, data_dir):
    argv = [
        "evaluate",
        "--optimizers",
        "sgd",
        "--reference",
        "sgd",
        "--tasks",
        TASKS[0],
        "--steps",
        "10",
        "--lrs",
        "1e-2",
        "--output",
        str(tmp_path / "e"),
        "--workers",
        "1",
        "--no-plots",
        "--no-progress",
        "--reps",
        "50",
    ]
    assert cli.main(argv) == 0
    with pytest.raises(cells.ConfigMismatchError, match="steps"):
        cli.main([a if a != "10" else "12" for a in argv])


def test_progress_bar_leaves_skipped_cells_out_of_its_rate():
    """A resume's finished cells must not make the remaining hours look like seconds."""
    bar = executor._Progress(total=12, enabled=True)
    try:
        for i in range(10):
            bar(cells.Cell("adam", f"task_{i}", 0, "lr_1e-03"), "skipped", {})
        fd = bar.bar.format_dict
        assert (fd["n"], fd["initial"]) == (10, 10)
        assert "10/12" in str(bar.bar)
        assert "?" in tqdm.format_meter(**{**fd, "elapsed": 5.0, "rate": None})
        bar.bar.mininterval = 0  # let tqdm sample the rate at once (by default 0.1 s)
        bar(
            cells.Cell("celo", "task_10", 0, "theta"),
            "done",
            {"summary": {"diverged": False, "seconds_per_step": 1.0}},
        )
        fd = bar.bar.format_dict
        assert (fd["n"], fd["initial"]) == (11, 10)
        # one cell in 100 s: one more to go is 100 s away, not 100 s / 11.
        assert "01:40<01:40" in tqdm.format_meter(**{**fd, "elapsed": 100.0, "rate": None})
        assert fd["rate"] is None  # no EMA of bursts: the bar uses the run's mean rate
    finally:
        bar.close()
    assert [r["status"] for r in bar.records] == ["skipped"] * 10 + ["done"]


def test_progress_bar_names_the_training_cells_and_their_steps():
    bar = executor._Progress(total=2, enabled=False)
    a = cells.Cell("adam", "RNNLM_lm1b32k_Patch32_LSTM256_Embed128", 0, "lr_1e-04")
    b = cells.Cell("celo", "RNNLM_wikipediaen32k_Patch32_LSTM256_Embed128", 0, "theta")
    bar.step(a, 10, 1000)
    bar.step(b, 340, 1000)
    bar.step(a, 20, 1000)
    assert bar.bar.postfix == (
        "adam RNNLM_lm1b32k_Patch32_LSTM25 lr_1e-04 20/1000"
        " | celo RNNLM_wikipediaen32k_Patch32 theta 340/1000"
    )
    bar(a, "error", {"error": "worker exited with code -9"})
    assert bar.bar.postfix == "celo RNNLM_wikipediaen32k_Patch32 theta 340/1000"
    bar(b, "done", {"summary": {"diverged": False, "seconds_per_step": 5.0}})
    assert bar.bar.postfix == "celo RNNLM_wikipediaen32k_Patch32"
    assert [r["status"] for r in bar.records] == ["error", "done"]


def test_worker_pool_runs_cells_and_reports_failures(tmp_path, data_dir, monkeypatch):
    steps = []
    step = executor._Progress.step
    monkeypatch.setattr(
        executor._Progress, "step", lambda self, *a: (steps.append(a), step(self, *a))
    )
    out = tmp_path / "pool"
    argv = [
        "evaluate",
        "--optimizers",
        "adam",
        "--tasks",
        TASKS[0],
        "No_Such_Task",
        "--steps",
        "10",
        "--lrs",
        "1e-3",
        "1e-2",
        "--output",
        str(out),
        "--workers",
        "2",
        "--no-plots",
        "--no-progress",
        "--reps",
        "50",
    ]
    assert cli.main(argv) == 1  # the unknown task's cells fail and are reported
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["cells"] == {"done": 2, "skipped": 0, "error": 2}
    assert all("No_Such_Task" in e["task"] for e in summary["run"]["errors"])
    assert summary["tasks_aggregated"] == [TASKS[0]] and summary["tasks_missing"] == [
        "No_Such_Task"
    ]
    assert (out / "cells/adam" / TASKS[0] / "seed_0/lr_1e-02.npz").exists()
    # The workers report each cell's steps to the bar: its last chunk at least.
    for tag in ("lr_1e-03", "lr_1e-02"):
        assert (cells.Cell("adam", TASKS[0], 0, tag), 10, 10) in steps


def test_reference_test_script_flags(tmp_path, data_dir):
    from celo import test as celo_test

    root = tmp_path / "exp"
    (root / "train" / "released").mkdir(parents=True)
    (root / "train" / "released" / "theta.state").write_bytes(
        (CHECKPOINTS / "celo_adam" / "theta.state").read_bytes()
    )
    assert (
        celo_test.main(
            [
                "--optimizer=celo_adam",
                "--task=ImageMLPAE_Mnist_128x32x128_bs128",
                "--steps=12",
                "--exp_id=released",
                f"--experiment_root={root}",
                "--disable_wandb",
            ]
        )
        == 0
    )
    path = root / "test/released/ImageMLPAE_Mnist_128x32x128_bs128/seed_0/metrics_unroll12.npz"
    curve = cells.load_npz(str(path))
    assert curve["train/loss"].shape == (12,)  # exactly `steps` updates
    np.testing.assert_array_equal(curve["eval/xs"], [0, 10, 12])
    assert (
        celo_test.main(
            [
                "--optimizer=adam",
                "--optimizer_type=handcrafted",
                "--test_lr=0.01",
                "--task=ImageMLPAE_Mnist_128x32x128_bs128",
                "--steps=5",
                "--exp_id=adam",
                f"--experiment_root={root}",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_acceptance_command_velodrome17_small(tmp_path, data_dir):
    """The issue's acceptance command, in full (17 tasks; ~15–30 min on 2 cores)."""
    out = tmp_path / "acc"
    argv = [
        "evaluate",
        "--optimizers",
        f"celo={CELO}",
        "adam",
        "sgdm",
        "--suite",
        "velodrome17_small",
        "--seeds",
        "0",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["tasks_aggregated"]) == 17
    for label in ("celo", "adam", "sgdm"):
        assert np.isfinite(summary["optimizers"][label]["iqm_final_loss"])
        assert len(list((out / "curves" / label).glob("*/seed_0.npz"))) == 17
