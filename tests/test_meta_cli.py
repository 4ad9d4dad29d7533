"""``celo train`` end to end: flag errors, the smoke preset (both phases, resume), kill and resume.

The runs are subprocesses sharing one persistent compilation cache, so only
the first run of each configuration compiles.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from celo import checkpoints, cli
from celo.commands import train as train_cmd
from celo.factory import get_optimizer
from celo.utils import pytree_to_ordered_dict

REPO = Path(__file__).resolve().parents[1]
# Single-family runs use sklearn's digits, which need no data files.
DIGITS = "ImageMLP_Digits8_Relu32_bs64"


def _env(tmp_path: Path) -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path.parent / "jax-cache"),
    )
    env.pop("XLA_FLAGS", None)
    return env


def _train(tmp_path: Path, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "celo.train", "--experiment_root", str(tmp_path), *flags]
    proc = subprocess.run(
        cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _leaves(path: Path, name: str) -> dict[str, np.ndarray]:
    template = get_optimizer(name).init(jax.random.PRNGKey(0))
    return {
        k: np.asarray(v)
        for k, v in pytree_to_ordered_dict(checkpoints.load_state(str(path), template)).items()
    }


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--optimizer", "adam", "--task", "fast_velo", "--trainer", "pes"], "--optimizer"),
        (
            [
                "--optimizer",
                "rnn_mlp",
                "--task",
                "fast_velo",
                "--trainer",
                "pes",
                "--train_partial",
            ],
            "--train_partial",
        ),
        (["--preset", "phase1", "--trunc_length", "45"], "--trunc_length"),
        (["--preset", "phase1", "--trainer", "es"], "--trainer"),
        (["--preset", "phase1", "--task", "no_such_task"], "--task"),
        (["--preset", "phase1", "--min_unroll_length", "3000"], "--min_unroll_length"),
        (["--preset", "phase1", "--aug", "mixup"], "--aug"),
        (["--preset", "phase1", "--resume"], "--resume"),
        (["--preset", "phase2"], "--init_from_ckpt"),
        (
            ["--preset", "phase1", "--init_from_ckpt", "/nonexistent/theta.state"],
            "--init_from_ckpt",
        ),
        (["--preset", "phase1", "--num_tasks", "8", "--num_devices", "3"], "--num_devices"),
        (["--optimizer", "celo", "--trainer", "pes"], "--task"),
    ],
)
def test_bad_flags_fail_before_compiling(argv, flag, capsys, tmp_path):
    start = time.perf_counter()
    code = cli.main(["train", "--experiment_root", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert flag in err, err
    assert time.perf_counter() - start < 10  # nothing was built or compiled
    assert not (tmp_path / "train").exists()


def test_presets_and_overrides():
    parser = train_cmd.argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(
        [
            "--preset",
            "phase1",
            "--outer_lr",
            "1e-3",
            "--no-freeze_exact",
            "--aug_reparam_range",
            "0.01,100",
        ]
    )
    cfg = train_cmd.config_from_args(args, environ={"EXPERIMENT_ROOT": "/data/exp"})
    assert (cfg.optimizer, cfg.task, cfg.trainer, cfg.train_partial) == (
        "celo_phase1",
        "fast_velo",
        "pes",
        True,
    )
    assert cfg.outer_lr == 1e-3 and cfg.freeze_exact is False
    assert cfg.aug_reparam_range == (0.01, 100.0)
    assert cfg.experiment_root == "/data/exp"
    exp_id = cfg.resolved_exp_id()
    assert exp_id.startswith("celo_phase1_") and exp_id.endswith("_lr0.001_seed0")


def test_smoke_preset_both_phases_and_resume(tmp_path, data_dir):
    """The CI run: phase 1, phase 2 from its theta, then phase 2 resumed for two more steps."""
    _train(tmp_path, "--preset", "smoke", "--exp_id", "p1", "--data_dir", str(data_dir))
    p1 = tmp_path / "train" / "p1"
    names = {p.name for p in p1.iterdir()}
    assert {
        "theta.state",
        "theta_0.state",
        "theta_2.state",
        "config.json",
        "metrics.npz",
        "trainer_state.msgpack",
        "metrics.jsonl",
    } <= names
    init = {
        k: np.asarray(v)
        for k, v in pytree_to_ordered_dict(
            get_optimizer("celo_phase1").init(jax.random.PRNGKey(0))
        ).items()
    }
    after1 = _leaves(p1 / "theta.state", "celo_phase1")
    for k in init:
        moved = not np.array_equal(init[k], after1[k])
        assert moved == ("ff_mod_stack" in k), k  # phase 1: only the MLP, frozen bit-identical

    _train(
        tmp_path,
        "--preset",
        "smoke_phase2",
        "--exp_id",
        "p2",
        "--data_dir",
        str(data_dir),
        "--init_from_ckpt",
        str(p1 / "theta.state"),
    )
    p2 = tmp_path / "train" / "p2"
    after2 = _leaves(p2 / "theta.state", "celo")
    for k in init:
        moved = not np.array_equal(after1[k], after2[k])
        assert moved == ("ff_mod_stack" not in k), k  # phase 2: only the scheduler
    metrics = np.load(p2 / "metrics.npz")
    assert "train/xs" in metrics and "train/average_meta_loss" in metrics
    assert any(k.startswith("train/family/") for k in metrics)
    assert np.all(np.isfinite(metrics["train/average_meta_loss"]))

    out = _train(
        tmp_path,
        "--preset",
        "smoke_phase2",
        "--exp_id",
        "p2",
        "--data_dir",
        str(data_dir),
        "--init_from_ckpt",
        str(p1 / "theta.state"),
        "--resume",
        "--outer_iterations",
        "6",
    )
    result = json.loads(out.stdout[out.stdout.index("{") :])
    assert result["metrics"]["average_meta_loss"] > 0
    after3 = _leaves(p2 / "theta.state", "celo")
    assert not np.array_equal(after3["/rnn_params/step_size/w"], after2["/rnn_params/step_size/w"])
    assert np.load(p2 / "metrics.npz")["train/xs"].tolist() == [1, 3, 5]


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    """SIGKILL a run between checkpoints, resume it, and get the uninterrupted run's theta.

    The comparison is bitwise: the resumed run restores every input of the
    next step (theta, AdamW moments, inner problems, accumulators, PRNG key)
    and runs the same compiled program, so nothing may differ.
    """
    flags = [
        "--preset",
        "smoke",
        "--task",
        DIGITS,
        "--outer_iterations",
        "60",
        "--ckpt_interval",
        "10",
        "--metrics_every",
        "5",
    ]
    _train(tmp_path, *flags, "--exp_id", "straight")

    cmd = [
        sys.executable,
        "-m",
        "celo.train",
        "--experiment_root",
        str(tmp_path),
        *flags,
        "--exp_id",
        "killed",
    ]
    proc = subprocess.Popen(
        cmd, env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    run_dir = tmp_path / "train" / "killed"
    deadline = time.time() + 600
    while not (run_dir / "theta_20.state").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "theta.state").exists()  # it really stopped early

    _train(tmp_path, *flags, "--exp_id", "killed", "--resume")
    a = _leaves(tmp_path / "train" / "straight" / "theta.state", "celo_phase1")
    b = _leaves(run_dir / "theta.state", "celo_phase1")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ma = np.load(tmp_path / "train" / "straight" / "metrics.npz")
    mb = np.load(run_dir / "metrics.npz")
    np.testing.assert_array_equal(ma["train/meta_loss"], mb["train/meta_loss"])


def test_init_from_ckpt_partial_load_from_another_layout():
    """--init_ckpt_optimizer_name: Celo-Adam's scheduler goes into Celo, the MLP stays fresh."""
    from celo.meta import configs
    from celo.meta.trainer import initial_theta

    ckpt = REPO / "tests" / "fixtures" / "checkpoints" / "celo_adam" / "theta.state"
    cfg = configs.phase2(init_from_ckpt=str(ckpt), init_ckpt_optimizer_name="celo_adam")
    lopt = get_optimizer("celo")
    theta = {k: np.asarray(v) for k, v in pytree_to_ordered_dict(initial_theta(cfg, lopt)).items()}
    fresh = {
        k: np.asarray(v)
        for k, v in pytree_to_ordered_dict(lopt.init(jax.random.PRNGKey(0))).items()
    }
    source = checkpoints.load_raw(str(ckpt))
    assert np.array_equal(theta["/rnn_params/step_size/w"], source["rnn_params"]["step_size"]["w"])
    assert np.array_equal(theta["/lstm_init_state/hidden"], source["lstm_init_state"]["hidden"])
    for k in theta:
        if k.startswith("/ff_mod_stack") or "rnn_to_controls" in k:  # absent from Celo-Adam
            assert np.array_equal(theta[k], fresh[k]), k
