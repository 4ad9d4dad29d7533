"""RNN-MLP-LOpt, AdaFac-MLP-LOpt and NN-Adam against the original implementation's traces.

The golden theta files are ``get_optimizer(name).init(PRNGKey(0))`` of the
reference; the traces replay 20 updates on the toy MLP tree and record the
params after every update and every leaf of the final optimizer state
(fixtures/golden/README-other-lopts.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from celo import checkpoints
from celo.factory import get_optimizer
from celo.lopt import LSTMState
from tests import golden
from tests.conftest import GOLDEN

NAMES = ["adafac_mlp", "rnn_mlp", "nnadam"]
NUM_PARAMS = {"adafac_mlp": 197, "rnn_mlp": 35_799, "nnadam": 21_896}


def _theta_path(name):
    return GOLDEN / f"{name}_theta.state"


def _load(name):
    lopt = get_optimizer(name)
    theta = checkpoints.load_state(str(_theta_path(name)), lopt.init(jax.random.PRNGKey(0)))
    return lopt, theta


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    raise TypeError(f"unexpected key {k!r}")


def _flat_state(state) -> dict[str, np.ndarray]:
    """``{"final_state/<path>": leaf}`` with the trace's naming (slash-joined keys)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {"final_state/" + "/".join(_key_name(k) for k in p): np.asarray(x) for p, x in flat}


def _in_file_order(tree, like):
    """``tree`` as plain nested dicts whose keys follow ``like``'s (the file's) order."""
    if isinstance(tree, LSTMState):
        tree = tree._asdict()
    if isinstance(like, dict):
        return {k: _in_file_order(tree[k], like[k]) for k in like}
    return np.asarray(tree)


@pytest.mark.parametrize("name", NAMES)
def test_init_layout_matches_golden_theta(name):
    lopt = get_optimizer(name)
    theta = lopt.init(jax.random.PRNGKey(0))
    raw = checkpoints.load_raw(str(_theta_path(name)))
    checkpoints.check_matches(raw, theta, source=name)  # keys, shapes and dtypes
    leaves = jax.tree_util.tree_leaves(theta)
    assert sum(np.size(x) for x in leaves) == NUM_PARAMS[name]
    assert all(np.asarray(x).dtype == np.float32 for x in leaves)


@pytest.mark.parametrize("name", NAMES)
def test_golden_theta_round_trips(name):
    """Loading keeps every value bit for bit; only the map order of a re-save differs.

    The golden files were written straight from ``init``, so their maps follow
    haiku's creation order (``w`` before ``b`` …), while ``save_state`` writes
    sorted keys like the released (trained) checkpoints. Serialised in the
    file's order, the loaded theta reproduces the file byte for byte.
    """
    lopt, theta = _load(name)
    data = _theta_path(name).read_bytes()
    raw = checkpoints.load_raw(str(_theta_path(name)))
    assert serialization.to_bytes(_in_file_order(theta, raw)) == data

    resaved = checkpoints.to_bytes(theta)
    assert len(resaved) == len(data)
    again = checkpoints.restore_raw(resaved)
    want, got = checkpoints.flatten_paths(raw), checkpoints.flatten_paths(again)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert got[k].dtype == want[k].dtype


@pytest.mark.parametrize("name", NAMES)
def test_save_state_is_byte_identical(name, tmp_path):
    _, theta = _load(name)
    out = tmp_path / "theta.state"
    checkpoints.save_state(str(out), theta, optimizer_name=name)
    assert out.read_bytes() == _theta_path(name).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_params_match_golden_trace(name):
    lopt, theta = _load(name)
    trace = golden.load(f"{name}_update_trace")
    worst = golden.assert_params_match(lopt.opt_fn(theta), trace, rtol=1e-5)
    assert worst <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_final_state_matches_golden_trace(name):
    lopt, theta = _load(name)
    trace = golden.load(f"{name}_update_trace")
    *_, (_, final) = golden.replay(lopt.opt_fn(theta), trace)
    ours = _flat_state(final)
    expected = {k: trace[k] for k in trace.files if k.startswith("final_state/")}
    assert set(ours) == set(expected)
    for k, want in expected.items():
        got = ours[k]
        assert got.shape == want.shape and got.dtype == want.dtype, k
        if want.size == 0:
            continue
        # A state value that is a small difference of O(scale) float32 terms (an
        # LSTM cell, a momentum that changed sign) carries rounding of a few ulp
        # of the tensor's scale, not of its own size: the observed worst is
        # 2.2e-7·max|leaf|. Allow 1e-6·max|leaf| on top of rtol 1e-5.
        atol = 1e-6 * float(np.max(np.abs(want)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=k)


def _toy_params():
    return {
        "scalar": jnp.asarray(0.5, jnp.float32),
        "bias": jnp.linspace(-1.0, 1.0, 3, dtype=jnp.float32),
        "conv": jnp.reshape(jnp.arange(24, dtype=jnp.float32) / 24.0, (2, 3, 4)),
    }


@pytest.mark.parametrize("name", NAMES)
def test_scalar_vector_and_rank3_leaves(name):
    lopt = get_optimizer(name)
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(1)))
    params = _toy_params()
    state = opt.init(params, num_steps=10)
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p) + 0.1, params)
    for _ in range(3):
        state = opt.update(state, grads, loss=jnp.asarray(1.0))
    new = opt.get_params(state)
    for k in params:
        assert new[k].shape == params[k].shape
        assert np.all(np.isfinite(new[k]))
        assert not np.array_equal(new[k], params[k]), f"{name} did not move {k}"


def test_rnn_mlp_requires_loss():
    lopt = get_optimizer("rnn_mlp")
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
    params = _toy_params()
    state = opt.init(params)
    with pytest.raises(ValueError, match="loss"):
        opt.update(state, params)
    with pytest.raises(ValueError, match="loss"):
        lopt.update_state(opt.theta, state, params, None, None, False, None)


@pytest.mark.parametrize("name", ["adafac_mlp", "nnadam"])
def test_requires_num_steps(name):
    lopt = get_optimizer(name)
    with pytest.raises(ValueError, match="num_steps"):
        lopt.opt_fn(lopt.init(jax.random.PRNGKey(0))).init(_toy_params())


def test_rnn_mlp_validation_update_only_tracks_the_loss():
    lopt = get_optimizer("rnn_mlp")
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
    params = _toy_params()
    state = opt.init(params)
    after = opt.update(state, params, loss=jnp.asarray(2.0), is_valid=True)
    assert int(after.iteration) == 1
    assert int(after.valid_loss_accum.updates) == 1
    np.testing.assert_allclose(after.valid_loss_accum.mean, 0.05 * 2.0, rtol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves(after.params), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert int(after.train_loss_accum.updates) == 0


def test_nnadam_controls_move_the_hyperparameters():
    """A constant control bias shifts the scaled learning rate by output_scale per step."""
    lopt = get_optimizer("nnadam")
    theta = lopt.init(jax.random.PRNGKey(0))
    head = theta["rnn_to_controls_params"]["rnn_to_controls"]
    theta["rnn_to_controls_params"]["rnn_to_controls"] = {
        "w": head["w"],
        "b": jnp.asarray([1.0, 0.0, 0.0, 0.0], jnp.float32),
    }
    opt = lopt.opt_fn(theta)
    params = _toy_params()
    state = opt.init(params, num_steps=10)
    for _ in range(2):
        state = opt.update(state, params, loss=jnp.asarray(1.0))
    for leaf in jax.tree_util.tree_leaves(state.per_layer_lr):
        np.testing.assert_allclose(leaf, theta["per_layer_lr"] + 2 * 0.01, rtol=1e-6)
    for leaf in jax.tree_util.tree_leaves(state.per_layer_beta1):
        np.testing.assert_allclose(leaf, theta["per_layer_beta1"], rtol=1e-6)
