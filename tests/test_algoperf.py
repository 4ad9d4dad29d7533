"""The AlgoPerf v0.6 submission API, the AlgoPerf-lite harness and its scoring."""

from __future__ import annotations

import importlib.util
import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo.evaluation.algoperf import harness, lite, spec, submission, workloads
from celo.evaluation.specs import parse_optimizer
from tests.conftest import CHECKPOINTS

#: The v0.6 JAX signatures, parameter by parameter (algoperf_notes.md §2).
V06 = {
    "get_batch_size": ["workload_name"],
    "init_optimizer_state": ["workload", "model_params", "model_state", "hyperparameters", "rng"],
    "update_params": [
        "workload",
        "current_param_container",
        "current_params_types",
        "model_state",
        "hyperparameters",
        "batch",
        "loss_type",
        "optimizer_state",
        "eval_results",
        "global_step",
        "rng",
        "train_state",
    ],
    "prepare_for_eval": [
        "workload",
        "current_param_container",
        "current_params_types",
        "model_state",
        "hyperparameters",
        "loss_type",
        "optimizer_state",
        "eval_results",
        "global_step",
        "rng",
    ],
    "data_selection": [
        "workload",
        "input_queue",
        "optimizer_state",
        "current_param_container",
        "model_state",
        "hyperparameters",
        "global_step",
        "rng",
    ],
}


def test_submission_has_exactly_the_v06_signatures():
    for name, params in V06.items():
        sig = inspect.signature(getattr(submission, name))
        assert list(sig.parameters) == params, name
    assert inspect.signature(submission.update_params).parameters["train_state"].default is None


class TinyWorkload(workloads._Classifier):
    """A synthetic 3-class problem, so the API test needs no data files."""

    name = "tiny"
    module = workloads._MnistMLP()
    validation_target_value = test_target_value = 0.5
    step_hint = 50
    max_allowed_runtime_sec = 60.0
    eval_period_time_sec = 1.0
    eval_batch_size = 64
    eval_period_steps = 10
    num_eval_examples = 128

    def _load(self):
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((10, 784)).astype(np.float32) * 2

        def split(n):
            y = rng.integers(0, 10, n).astype(np.int32)
            return {
                "inputs": centers[y] + rng.standard_normal((n, 784)).astype(np.float32),
                "targets": y,
            }

        return {"train": split(512), "validation": split(128), "test": split(128)}


@pytest.mark.parametrize("opt", ["adam", "celo"])
def test_five_functions_called_with_v06_arguments(opt):
    spec_ = parse_optimizer(
        f"celo={CHECKPOINTS / 'celo' / 'theta.state'}" if opt == "celo" else opt
    )
    submission.configure(spec_.name, spec_.checkpoint, 1e-3)
    w = TinyWorkload()
    rng = jax.random.PRNGKey(0)
    params, model_state = w.init_model_fn(rng)
    assert submission.get_batch_size(workload_name="mnist") == 16
    assert submission.get_batch_size(workload_name="imagenet_resnet") == 1024
    state = submission.init_optimizer_state(
        workload=w, model_params=params, model_state=model_state, hyperparameters=None, rng=rng
    )
    if opt == "celo":
        assert int(state.opt_state.num_steps) == w.step_hint  # the horizon is the step hint
    queue = w._build_input_queue(rng, "train", None, 32)
    batch = submission.data_selection(
        workload=w,
        input_queue=queue,
        optimizer_state=state,
        current_param_container=params,
        model_state=model_state,
        hyperparameters=None,
        global_step=0,
        rng=rng,
    )
    assert batch["inputs"].shape == (32, 784)
    losses = []
    for step in range(3):
        new_state, new_params, new_ms = submission.update_params(
            workload=w,
            current_param_container=params,
            current_params_types=w.model_params_types,
            model_state=model_state,
            hyperparameters=None,
            batch=batch,
            loss_type=spec.LossType.SOFTMAX_CROSS_ENTROPY,
            optimizer_state=state,
            eval_results=[],
            global_step=step,
            rng=jax.random.fold_in(rng, step),
            train_state={},
        )
        logits, _ = w.model_fn(params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False)
        losses.append(float(w.loss_fn(batch["targets"], logits)["summed"]))
        assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(params)
        moved = jax.tree_util.tree_map(
            lambda a, b: float(jnp.max(jnp.abs(a - b))), new_params, params
        )
        assert max(jax.tree_util.tree_leaves(moved)) > 0
        state, params, model_state = new_state, new_params, new_ms
    assert losses[-1] < losses[0]
    out_state, eval_params, eval_ms = submission.prepare_for_eval(
        workload=w,
        current_param_container=params,
        current_params_types=w.model_params_types,
        model_state=model_state,
        hyperparameters=None,
        loss_type=spec.LossType.SOFTMAX_CROSS_ENTROPY,
        optimizer_state=state,
        eval_results=[],
        global_step=3,
        rng=rng,
    )
    assert out_state is state and eval_params is params and eval_ms is model_state


def test_harness_times_to_target_in_steps_and_seconds():
    submission.configure("adam", None, 3e-3)
    r = harness.run_submission(TinyWorkload(), submission, "adam", max_steps=200)
    assert r.reached
    assert r.steps_to_target % TinyWorkload.eval_period_steps == 0 and r.steps_to_target > 0
    assert 0 < r.seconds_to_target <= r.seconds
    assert r.evals[-1]["validation/accuracy"] >= 0.5
    missed = harness.run_submission(TinyWorkload(), submission, "adam", max_steps=0)
    assert not missed.reached and missed.steps_to_target is None and missed.steps == 0


def test_performance_profile_score_hand_checked():
    times = {
        "A": {"w1": 10.0, "w2": 20.0},
        "B": {"w1": 20.0, "w2": 100.0},
        "C": {"w1": None, "w2": 30.0},
    }
    taus, profiles, scores = harness.performance_profiles(times)
    # A is fastest everywhere: ρ = 1 on [1, 4] → score 1.
    assert scores["A"] == pytest.approx(1.0)
    # B: ratio 2 on w1, 5 (> r_max, never) on w2 → ρ = 0.5 for τ ≥ 2 → ∫ = 0.5·2 = 1 → 1/3.
    assert scores["B"] == pytest.approx(1 / 3, abs=2e-3)
    # C: never on w1, ratio 1.5 on w2 → ρ = 0.5 for τ ≥ 1.5 → 0.5·2.5/3.
    assert scores["C"] == pytest.approx(0.5 * 2.5 / 3, abs=2e-3)
    assert profiles["B"][0] == 0.0 and profiles["B"][-1] == 0.5


def test_export_writes_an_importable_submission(tmp_path):
    spec_ = parse_optimizer(f"celo_adam={CHECKPOINTS / 'celo_adam' / 'theta.state'}")
    path = lite.export(spec_, str(tmp_path / "sub"))
    assert (tmp_path / "sub" / "theta.state").read_bytes() == (
        CHECKPOINTS / "celo_adam" / "theta.state"
    ).read_bytes()
    mod_spec = importlib.util.spec_from_file_location("exported_submission", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    for name, params in V06.items():
        assert list(inspect.signature(getattr(mod, name)).parameters) == params
    assert submission._CONFIG["optimizer"] == "celo_adam"
    assert submission._CONFIG["checkpoint"] == str(tmp_path / "sub" / "theta.state")


def test_lite_workloads_load_and_evaluate(data_dir):
    for name in workloads.WORKLOADS:
        w = workloads.get_workload(name)
        params, _ = w.init_model_fn(jax.random.PRNGKey(0))
        assert w.loss_type in spec.LossType
        batch = next(w._build_input_queue(jax.random.PRNGKey(1), "train", None, 4))
        logits, _ = w.model_fn(params, batch, None, spec.ForwardPassMode.TRAIN, None, True)
        out = w.loss_fn(batch["targets"], logits)
        assert np.isfinite(float(out["summed"])) and float(out["n_valid_examples"]) > 0
    mnist = workloads.get_workload("mnist")
    assert {k: len(v["targets"]) for k, v in mnist.arrays.items()} == {
        "train": 50_000,
        "validation": 10_000,
        "test": 10_000,
    }
    assert mnist.validation_target_value == 0.97 and mnist.step_hint == 7813


@pytest.mark.slow
def test_lite_pool_adam_and_celo_on_four_workloads(data_dir, capsys):
    """A short AlgoPerf-lite run: the table and scores are printed (full run: docs/algoperf.md)."""
    pool = [
        parse_optimizer("adam"),
        parse_optimizer(f"celo={CHECKPOINTS / 'celo' / 'theta.state'}"),
    ]
    result = lite.run_pool(pool, max_steps=400)
    print(result["table"])
    assert len(result["runs"]) == 8
    assert set(result["scores"]["steps"]) == {"adam", "celo"}
    assert all(0.0 <= s <= 1.0 for s in result["scores"]["steps"].values())


def test_algoperf_run_command(tmp_path, data_dir, capsys):
    from celo import cli

    log = tmp_path / "track.jsonl"
    argv = [
        "algoperf",
        "run",
        "--submissions",
        "adam",
        "sgd",
        "--workloads",
        "mnist",
        "--max-steps",
        "20",
        "--output",
        str(tmp_path / "ap"),
        "--tracking-log",
        str(log),
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| mnist (accuracy ≥ 0.97) |" in out and "score, time in steps" in out
    result = json.loads((tmp_path / "ap" / "results.json").read_text())
    assert [r["submission"] for r in result["runs"]] == ["adam", "sgd"]
    assert all(not r["reached"] and r["steps"] == 20 for r in result["runs"])
    assert result["scores"]["steps"] == {"adam": 0.0, "sgd": 0.0}  # nobody reached the target
    records = [json.loads(line) for line in log.read_text().splitlines()]
    metrics = {k: v for r in records if r["type"] == "metrics" for k, v in r["metrics"].items()}
    assert metrics["algoperf/adam/mnist/reached"] == 0.0


def test_time_budget_stops_runs_unless_switched_off():
    submission.configure("adam", None, 3e-3)
    w = TinyWorkload()
    w.max_allowed_runtime_sec = 1e-9
    w.validation_target_value = 2.0  # unreachable accuracy
    assert harness.run_submission(w, submission, "adam", max_steps=30).steps == 0
    r = harness.run_submission(w, submission, "adam", max_steps=30, time_budget=False)
    assert r.steps == 30 and not r.reached
