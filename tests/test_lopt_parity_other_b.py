"""VeLO (HyperV2) and Celo2 against the original implementation's golden traces.

The traces (fixtures/golden/README-other-lopts.md) start from
``init(PRNGKey(0))`` of the original factories. ``velo_s`` barely moves its
params with a random theta (about 4e-9), so for it the final accumulators and
the per-tensor LSTM state are the real check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo import checkpoints
from celo.factory import get_optimizer
from celo.lopt import LSTMState, factored_init, factored_update
from celo.lopt.ff_mlp import mlp_input_groups, mlp_outputs, stack_w0
from celo.lopt.newton_schulz import NS_COEFFS, newton_schulz
from celo.optimizers.celo import init_ff_mod
from celo.optimizers.velo import LSTM_INPUTS, lstm_features
from tests import golden
from tests.conftest import GOLDEN

NAMES = ["velo_s", "celo2base", "celo2"]
NUM_PARAMS = {
    "velo_s": 46_337,
    "velo": 2_320_385,
    "velo_4000": 2_320_385,
    "celo2base": 347,
    "celo2": 347,
}


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


@pytest.mark.parametrize("name", NAMES)
def test_init_layout_matches_golden_theta(name):
    theta = get_optimizer(name).init(jax.random.PRNGKey(0))
    raw = checkpoints.load_raw(str(_theta_path(name)))
    checkpoints.check_matches(raw, theta, source=name)  # keys, shapes and dtypes
    leaves = jax.tree_util.tree_leaves(theta)
    assert sum(np.size(x) for x in leaves) == NUM_PARAMS[name]


@pytest.mark.parametrize("name", list(NUM_PARAMS))
def test_theta_sizes(name):
    shapes = jax.eval_shape(get_optimizer(name).init, jax.random.PRNGKey(0))
    leaves = jax.tree_util.tree_leaves(shapes)
    assert sum(int(np.prod(x.shape)) for x in leaves) == NUM_PARAMS[name]
    assert all(x.dtype == jnp.float32 for x in leaves)


def test_velo_4000_theta_shapes():
    """The layout of spec §6.4, which the released VeLO-4000 file must load into."""
    theta = jax.eval_shape(get_optimizer("velo_4000").init, jax.random.PRNGKey(0))
    ff = theta["ff_mod_stack"]["~"]
    channels = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
    for k, c in enumerate(channels):
        assert ff[f"w0__{k}"].shape == (256, c, 4)
    assert (ff["w1"].shape, ff["w2"].shape) == ((256, 4, 4), (256, 4, 3))
    assert (ff["b0"].shape, ff["b1"].shape, ff["b2"].shape) == ((256, 4), (256, 4), (256, 3))
    assert theta["lstm_init_state"].hidden.shape == (1, 512)
    rnn = theta["rnn_params"]
    for mix in ("linear", "linear_1", "linear_2"):
        assert rnn[mix]["w"].shape == (LSTM_INPUTS, 512)
    assert rnn["rnn/linear"]["w"].shape == (1024, 2048)
    assert rnn["rnn_to_controls"]["w"].shape == (512, 256)
    assert rnn["step_size"]["w"].shape == (512, 1)


@pytest.mark.parametrize("name", NAMES)
def test_golden_theta_resaves_byte_identical(name, tmp_path):
    """Load, then ``save_state``: the exact bytes of the original file.

    The golden files were written straight from ``init``, so their maps keep
    haiku's creation order (``lstm_init_state`` first, ``w`` before ``b`` …);
    the LSTM state must come back as an ``LSTMState`` (fields ``hidden``, ``cell``).
    """
    _, theta = _load(name)
    out = tmp_path / "theta.state"
    checkpoints.save_state(str(out), theta, optimizer_name=name)
    assert out.read_bytes() == _theta_path(name).read_bytes()
    if name == "velo_s":
        assert isinstance(theta["lstm_init_state"], LSTMState)


@pytest.mark.parametrize("name", NAMES)
def test_params_match_golden_trace(name):
    lopt, theta = _load(name)
    trace = golden.load(f"{name}_update_trace")
    golden.assert_params_match(lopt.opt_fn(theta), trace, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_final_state_matches_golden(name):
    """Every leaf of the state after 20 updates: accumulators, LSTM state, loss buffer.

    Elementwise rtol 1e-5 and no atol: the worst entries (LSTM hidden and cell
    of velo_s) differ by about 5e-6 relative, from float32 reduction order.
    """
    lopt, theta = _load(name)
    trace = golden.load(f"{name}_update_trace")
    *_, (_, state) = golden.replay(lopt.opt_fn(theta), trace)
    mine = _flat_state(state)
    want = {k: trace[k] for k in trace.files if k.startswith("final_state/")}
    assert set(mine) == set(want)
    for k, expected in want.items():
        assert mine[k].shape == expected.shape, k
        assert mine[k].dtype == expected.dtype, k
        if expected.dtype.kind in "iub":
            np.testing.assert_array_equal(mine[k], expected, err_msg=k)
        else:
            np.testing.assert_allclose(mine[k], expected, rtol=1e-5, atol=0, err_msg=k)


def _velo_s():
    lopt = get_optimizer("velo_s")
    return lopt, lopt.init(jax.random.PRNGKey(3))


def test_lstm_features_keep_the_var_rms_quirk():
    """30 inputs, with ``var_rms`` centred on the momentum mean (3 values, not 1)."""
    rng = np.random.RandomState(0)
    p = rng.randn(8, 1, 16).astype(np.float32)
    # Momenta with clearly different means per decay, so the quirk shows.
    m = (0.1 * rng.randn(8, 1, 16, 3) + [0.5, -0.2, 0.05]).astype(np.float32)
    rms = (0.01 * rng.rand(8, 1, 16, 1)).astype(np.float32)
    loss_features = np.linspace(-1, 1, 9).astype(np.float32)
    feats = np.asarray(lstm_features(p, m, rms, 0.25, loss_features))
    assert feats.shape == (LSTM_INPUTS,)

    p64, m64, r64 = (x.astype(np.float64) for x in (p, m, rms))
    scale = 1 / np.sqrt(np.mean(p64**2))
    m64, r64 = m64 * scale, r64 * scale
    clip_log = lambda x: 0.5 * np.clip(np.log(1e-8 + np.abs(10 * x)), -5, 5)
    mean_m = m64.mean(axis=(0, 1, 2))
    taus = np.array([0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1])
    expected = np.concatenate(
        [
            np.tanh(10 * (0.25 - taus)),
            loss_features,
            clip_log(r64.mean(axis=(0, 1, 2))),
            [0, 0, 1, 0, 0],  # two axes longer than 1
            clip_log(((m64 - mean_m) ** 2).mean(axis=(0, 1, 2))),
            clip_log(((r64 - mean_m) ** 2).mean(axis=(0, 1, 2))),  # the quirk
        ]
    )
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    # Centred on its own mean, rms would give one value, far from all three.
    var_rms = feats[-3:]
    assert len(set(np.round(var_rms, 3))) == 3
    assert np.all(np.abs(var_rms - clip_log(r64.var())) > 0.3)


def test_velo_bugged_flags():
    lopt = get_optimizer("velo_s", use_bugged_next_lstm_state=True, use_bugged_loss_features=True)
    theta = lopt.init(jax.random.PRNGKey(1))
    opt = lopt.opt_fn(theta)
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros((3,))}
    state = opt.init(params, num_steps=1000)
    np.testing.assert_allclose(state.loss_buffer["decays"], np.exp(-0.1), rtol=1e-6)
    state = opt.update(state, {"w": jnp.ones((4, 3)), "b": jnp.ones((3,))}, loss=1.0)
    np.testing.assert_array_equal(state.lstm_hidden_state.hidden, np.zeros((2, 64)))

    fixed = get_optimizer("velo_s").opt_fn(theta)
    state = fixed.init(params, num_steps=1000)
    assert float(state.loss_buffer["decays"][-1]) > 0.99
    state = fixed.update(state, {"w": jnp.ones((4, 3)), "b": jnp.ones((3,))}, loss=1.0)
    assert np.any(np.asarray(state.lstm_hidden_state.hidden) != 0)


def test_velo_handles_scalars_and_rank3():
    lopt, theta = _velo_s()
    opt = lopt.opt_fn(theta)
    rng = np.random.RandomState(2)
    params = {"s": jnp.float32(0.5), "t": jnp.asarray(rng.randn(3, 4, 5), jnp.float32)}
    state = opt.init(params, num_steps=10)
    for i in range(3):
        grad = {k: jnp.full_like(p, 0.1 * (i + 1)) for k, p in params.items()}
        state = opt.update(state, grad, loss=2.0 - i)
    for leaf in jax.tree_util.tree_leaves(state):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    assert state.params["s"].shape == ()


def test_newton_schulz_pushes_singular_values_towards_one():
    rng = np.random.RandomState(0)
    # Singular values spread over two decades (0.1 to 10); five iterations
    # bring them all into roughly [0.7, 1.2].
    u, _ = np.linalg.qr(rng.randn(24, 24))
    v, _ = np.linalg.qr(rng.randn(40, 40))
    s = np.logspace(-1, 1, 24)
    x = (u * s) @ v[:24]
    for mat in (x, x.T):
        out = np.asarray(newton_schulz(jnp.asarray(mat, jnp.float32)), np.float64)
        sv = np.linalg.svd(out, compute_uv=False)
        assert sv.min() > 0.6 and sv.max() < 1.25, sv
        # Same singular vectors (an odd polynomial in x): outᵀ·x = V f(S) S Vᵀ is symmetric.
        gram = out.T @ mat
        np.testing.assert_allclose(gram, gram.T, atol=1e-4 * np.abs(gram).max())
    np.testing.assert_allclose(
        newton_schulz(jnp.asarray(x.T, jnp.float32)),
        np.asarray(newton_schulz(jnp.asarray(x, jnp.float32))).T,
        rtol=1e-5,
        atol=1e-6,
    )
    # Leading axes are batch axes.
    batch = jnp.asarray(rng.randn(3, 5, 7), jnp.float32)
    np.testing.assert_allclose(
        newton_schulz(batch)[1], newton_schulz(batch[1]), rtol=1e-5, atol=1e-6
    )
    assert not np.any(np.asarray(newton_schulz(jnp.zeros((4, 6)))))


def test_newton_schulz_matches_optax_muon():
    """optax's Muon runs the same quintic; its function is private, so skip if it moves."""
    muon = pytest.importorskip("optax.contrib._muon")
    ref = getattr(muon, "orthogonalize_via_newton_schulz", None)
    if ref is None:
        pytest.skip("optax no longer exposes orthogonalize_via_newton_schulz")
    x = jnp.asarray(np.random.RandomState(1).randn(12, 20), jnp.float32)
    want = ref(x, jnp.asarray(NS_COEFFS), 5, eps=1e-8)
    np.testing.assert_allclose(newton_schulz(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(10, 3, 4), (3, 4, 10), (6, 5), (7,)])
def test_celo2_mlp_matches_literal_form(shape):
    """Celo2's options of ``mlp_outputs`` (ε, last-two-axes normaliser, no groups 9–13
    for vectors) against the literal 14-group construction."""
    rng = np.random.RandomState(len(shape))
    decays = (0.9, 0.99, 0.999)
    p = jnp.asarray(rng.randn(*shape), jnp.float32)
    g = jnp.asarray(rng.randn(*shape), jnp.float32)
    m = jnp.asarray(0.1 * rng.randn(*shape, 3), jnp.float32)
    rms = jnp.asarray(0.01 * rng.rand(*shape, 1), jnp.float32)
    fac, fac_g = factored_update(factored_init({"x": p}, decays), {"x": g}, decays)
    vc, vr, vd = fac.v_col["x"], fac.v_row["x"], fac.v_diag["x"]
    ff = init_ff_mod(jax.random.PRNGKey(4), 8)["~"]
    ff = {k: v + 0.1 for k, v in ff.items()}  # non-zero biases exercise every term
    weights = {k: ff[k] for k in ("b0", "w1", "b1", "w2", "b2")}
    weights["w0"] = stack_w0(ff)

    d, mu = mlp_outputs(
        weights, p, g, m, rms, fac_g["x"], vc, vr, vd,
        rsqrt_eps=1e-8, norm_eps=1e-9, norm_last_axes=2, vector_fac_groups=False,
    )  # fmt: skip

    groups = mlp_input_groups(
        p, g, m, rms, fac_g["x"], vc, vr, vd, rsqrt_eps=1e-8, vector_fac_groups=False
    )
    axes = tuple(range(len(shape)))[-2:]
    x = np.concatenate(
        [np.asarray(gr) / np.sqrt(1e-9 + np.mean(np.square(gr), axis=axes, keepdims=True))
         for gr in groups],
        axis=-1,
    )  # fmt: skip
    w0 = np.asarray(weights["w0"])[: x.shape[-1]]
    h = np.maximum(x @ w0 + weights["b0"], 0)
    h = np.maximum(h @ weights["w1"] + weights["b1"], 0)
    out = h @ weights["w2"] + weights["b2"]
    np.testing.assert_allclose(d, out[..., 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mu, out[..., 1], rtol=1e-4, atol=1e-5)


def test_celo2_routes_biases_to_adam():
    params = {"mlp/~/linear_0": {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}, "embed": jnp.ones(4)}
    assert get_optimizer("celo2").routes_to_adam(params) == [False, True, False]
    assert get_optimizer("celo2", regex_1d="").routes_to_adam(params) == [False, False, False]


def test_celo2base_step_is_rms_normalised_per_slice():
    """Each slice of a rank-3 tensor moves by an RMS of ``step_mult`` (no weight decay)."""
    lopt = get_optimizer("celo2base")
    opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
    rng = np.random.RandomState(5)
    params = {"t": jnp.asarray(rng.randn(3, 6, 5), jnp.float32), "s": jnp.float32(1.0)}
    state = opt.init(params)
    grad = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.randn(*p.shape), jnp.float32), params)
    new = opt.update(state, grad)
    delta = (params["t"] - new.params["t"]) / lopt.step_mult
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(delta), axis=(1, 2))), 1.0, rtol=1e-3)
    # A scalar step is normalised to magnitude 1 too.
    np.testing.assert_allclose(abs(params["s"] - new.params["s"]) / lopt.step_mult, 1.0, rtol=1e-3)
