"""A smoke meta-train with ``--experiment_root gs://…`` survives SIGKILL and resumes.

Runs ``celo train`` in subprocesses against gcp-storage-emulator (started by
the test on 127.0.0.1): the first run is killed right after its first
checkpoints land in the bucket, the second continues it with ``--resume``
from the trainer state read back from ``gs://``. About a minute, most of it
compiling the PES step twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("google.cloud.storage")

from celo import checkpoints, storage  # noqa: E402
from celo.cli import _available  # noqa: E402
from tests.fakes.gcs_emulator import GcsEmulator  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif("train" not in _available(), reason="celo train is not available"),
]

ITERATIONS = 120
INTERVAL = 8


def _train(root: str, env: dict, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celo.cli",
        "train",
        "--preset",
        "smoke",
        "--experiment_root",
        root,
        "--exp_id",
        "killed",
        "--outer_iterations",
        str(ITERATIONS),
        "--ckpt_interval",
        str(INTERVAL),
        "--verbose",
        *extra,
    ]


def test_smoke_meta_train_on_gcs_survives_a_kill_and_resumes(data_dir, monkeypatch, tmp_path):
    with GcsEmulator("celo-train") as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        env = {
            **os.environ,
            **gcs.env,
            "CELO_DATA_DIR": str(data_dir),
            "JAX_PLATFORMS": "cpu",
            # The resumed run loads the first run's compiled step instead of recompiling.
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
        root = "gs://celo-train/experiments"
        exp = f"{root}/train/killed"
        first_log = tmp_path / "first.log"
        with open(first_log, "w") as log:
            proc = subprocess.Popen(_train(root, env), env=env, stdout=log, stderr=log)
            deadline = time.monotonic() + 600
            try:
                # A checkpoint writes theta_<i>.state, then the trainer state: once
                # theta_<2·interval> is there, the trainer state of iteration <interval> is too.
                while not storage.exists(f"{exp}/theta_{2 * INTERVAL}.state"):
                    assert proc.poll() is None, first_log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
                    time.sleep(0.2)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        listed = storage.list_dir(exp)
        assert "theta.state" not in listed, "the run finished before it was killed"
        assert "trainer_state.msgpack" in listed
        # Whatever the kill interrupted, every object in the bucket is whole.
        for name in listed:
            if name.endswith(".state"):
                checkpoints.load_raw(f"{exp}/{name}")

        resumed = subprocess.run(
            _train(root, env, "--resume"), env=env, capture_output=True, text=True, timeout=900
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        start = int(re.search(r"from iteration (\d+)", resumed.stderr).group(1))
        assert INTERVAL < start < ITERATIONS, resumed.stderr[-3000:]

        done = storage.list_dir(exp)
        last = (ITERATIONS - 1) // INTERVAL * INTERVAL
        assert {"theta.state", f"theta_{last}.state", "metrics.npz", "config.json"} <= set(done)
        final = checkpoints.load_raw(f"{exp}/theta.state")
        assert checkpoints.read_sidecar(f"{exp}/theta.state")["optimizer"] == "celo_phase1"
        assert final and not any(n.startswith(".tmp-") for n in done)


@pytest.mark.slow
@pytest.mark.skipif("evaluate" not in _available(), reason="celo evaluate is not available")
def test_evaluate_writes_results_to_gcs(data_dir, monkeypatch):
    """``celo evaluate`` reads theta from gs:// and writes curves, tables and plots there."""
    with GcsEmulator("celo-eval") as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        env = {**os.environ, **gcs.env, "CELO_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}
        theta = "gs://celo-eval/train/theta.state"
        src = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoints", "celo")
        checkpoints.save_state(
            theta, checkpoints.load_raw(os.path.join(src, "theta.state")), optimizer_name="celo"
        )
        out = "gs://celo-eval/eval"
        cmd = [
            sys.executable,
            "-m",
            "celo.cli",
            "evaluate",
            "--optimizers",
            f"celo={theta}",
            "adam",
            "--tasks",
            "ImageMLP_FashionMnist_Relu128x128",
            "--steps",
            "5",
            "--lrs",
            "1e-3",
            "--seeds",
            "0",
            "--output",
            out,
            "--workers",
            "1",
            "--no-progress",
        ]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert {"summary.json", "tables.md", "curves", "plots"} <= set(storage.list_dir(out))
        assert "iqm.png" in storage.list_dir(f"{out}/plots")
