"""theta.state reading and writing: strict layout checks, clear errors, no pickle."""

from __future__ import annotations

import json
import pickle

import jax
import numpy as np
import pytest

from celo import checkpoints
from celo.checkpoints import CheckpointError
from celo.factory import get_optimizer
from celo.utils import init_lopt_from_ckpt, load_from_pretrained, pytree_to_ordered_dict
from tests.conftest import CHECKPOINTS

CELO = str(CHECKPOINTS / "celo" / "theta.state")


def _template(name="celo"):
    return get_optimizer(name).init(jax.random.PRNGKey(0))


def test_released_layouts_and_sizes():
    for name, size, count in [("celo", 149_216, 37_089), ("celo_adam", 147_803, 36_865)]:
        path = CHECKPOINTS / name / "theta.state"
        assert path.stat().st_size == size
        theta = checkpoints.load_state(str(path), _template(name))
        assert sum(x.size for x in jax.tree_util.tree_leaves(theta)) == count
        raw = checkpoints.load_raw(str(path))
        assert list(raw) == list(theta)  # file order kept


def test_init_matches_released_shapes():
    for name in ("celo", "celo_phase1", "celo_adam"):
        raw = checkpoints.load_raw(
            str(CHECKPOINTS / ("celo_adam" if name == "celo_adam" else "celo") / "theta.state")
        )
        checkpoints.check_matches(raw, _template(name))


def test_missing_extra_and_shape_errors_name_the_keys(tmp_path):
    raw = checkpoints.load_raw(CELO)
    bad = dict(raw)
    bad["rnn_params"] = dict(raw["rnn_params"])
    del bad["rnn_params"]["step_size"]
    bad["rnn_params"]["bogus"] = {"w": np.zeros((2, 2), np.float32)}
    bad["rnn_params"]["linear_1"] = {
        "w": np.zeros((17, 64), np.float32),
        "b": raw["rnn_params"]["linear_1"]["b"],
    }
    path = tmp_path / "bad.state"
    path.write_bytes(checkpoints.to_bytes(bad))
    with pytest.raises(CheckpointError) as e:
        checkpoints.load_state(str(path), _template())
    msg = str(e.value)
    assert "missing keys: rnn_params → step_size → b, rnn_params → step_size → w" in msg
    assert "unexpected keys: rnn_params → bogus → w" in msg
    assert (
        "shape mismatch at rnn_params → linear_1 → w: checkpoint (17, 64), expected (18, 64)" in msg
    )


def test_wrong_optimizer_is_rejected():
    with pytest.raises(CheckpointError, match="missing keys: ff_mod_stack"):
        init_lopt_from_ckpt(get_optimizer("celo"), str(CHECKPOINTS / "celo_adam" / "theta.state"))


def test_dtype_mismatch(tmp_path):
    raw = checkpoints.load_raw(CELO)
    raw["lstm_init_state"]["hidden"] = raw["lstm_init_state"]["hidden"].astype(np.float64)
    path = tmp_path / "f64.state"
    path.write_bytes(checkpoints.to_bytes(raw))
    with pytest.raises(CheckpointError, match="dtype mismatch at lstm_init_state → hidden"):
        checkpoints.load_state(str(path), _template())


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"", "empty"),
        (open(CELO, "rb").read()[:70_000], "truncated or corrupt|could not decode"),
        (b"this is not msgpack at all", "could not decode|not a valid|top level"),
        (pickle.dumps({"theta": 1}), "pickle"),
    ],
    ids=["empty", "truncated", "garbage", "pickle"],
)
def test_corrupt_files_give_clear_errors(tmp_path, payload, match):
    path = tmp_path / "theta.state"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match=match):
        checkpoints.load_state(str(path), _template())


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        checkpoints.load_state("/nonexistent/theta.state", _template())


def test_save_writes_sidecar_atomically(tmp_path):
    theta = _template("celo_adam")
    out = tmp_path / "sub" / "theta.state"
    checkpoints.save_state(str(out), theta, optimizer_name="celo_adam", config={"outer_lr": 3e-4})
    meta = json.loads((tmp_path / "sub" / "theta.state.json").read_text())
    assert meta["optimizer"] == "celo_adam"
    assert meta["format_version"] == checkpoints.FORMAT_VERSION
    assert meta["config"] == {"outer_lr": 3e-4}
    assert meta["num_params"] == 36_865
    assert checkpoints.read_sidecar(str(out)) == meta
    assert [p.name for p in (tmp_path / "sub").iterdir() if p.name.startswith(".tmp")] == []
    again = checkpoints.load_state(str(out), _template("celo_adam"))
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_load_from_pretrained_partial_phase1_to_phase2():
    """Phase 2 starts from a phase-1 checkpoint: matching paths are copied, others kept."""
    phase1 = checkpoints.load_state(CELO, _template("celo_phase1"))
    fresh = _template("celo")
    merged = load_from_pretrained(fresh, phase1)
    np.testing.assert_array_equal(
        merged["ff_mod_stack"]["~"]["w1"], phase1["ff_mod_stack"]["~"]["w1"]
    )
    # Partial: a tree that only has the scheduler leaves the MLP untouched.
    sched_only = {"rnn_params": phase1["rnn_params"], "lstm_init_state": phase1["lstm_init_state"]}
    merged = load_from_pretrained(fresh, sched_only)
    np.testing.assert_array_equal(
        merged["ff_mod_stack"]["~"]["w1"], fresh["ff_mod_stack"]["~"]["w1"]
    )
    np.testing.assert_array_equal(
        merged["rnn_params"]["rnn/linear"]["w"], phase1["rnn_params"]["rnn/linear"]["w"]
    )
    assert "/rnn_params/rnn/linear/w" in pytree_to_ordered_dict(merged)


def test_load_from_pretrained_shape_mismatch():
    fresh = _template("celo")
    other = get_optimizer("celo", lstm_hidden_size=32).init(jax.random.PRNGKey(0))
    with pytest.raises(CheckpointError, match="/rnn_params/linear/w"):
        load_from_pretrained(fresh, other)
