"""Celo, Celo phase 1 and Celo-Adam against the original implementation's traces."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from celo import checkpoints
from celo.factory import get_optimizer
from celo.lopt import factored_update
from celo.lopt.ff_mlp import GROUP_CHANNELS, mlp_input_groups, mlp_outputs, stack_w0
from celo.optimizers.celo import reference_view
from celo.utils import init_lopt_from_ckpt
from tests import golden
from tests.conftest import CHECKPOINTS

CKPT = {"celo": "celo", "celo_phase1": "celo", "celo_adam": "celo_adam"}


@pytest.mark.parametrize("name", ["celo", "celo_phase1", "celo_adam"])
def test_params_match_golden_trace(name):
    trace = golden.load(f"{name}_update_trace")
    opt = init_lopt_from_ckpt(get_optimizer(name), str(CHECKPOINTS / CKPT[name] / "theta.state"))
    golden.assert_params_match(opt, trace, rtol=1e-5)


@pytest.mark.parametrize("name", ["celo", "celo_phase1", "celo_adam"])
def test_scheduler_state_matches_golden_trace(name):
    trace = golden.load(f"{name}_update_trace")
    lopt = get_optimizer(name)
    opt = init_lopt_from_ckpt(lopt, str(CHECKPOINTS / CKPT[name] / "theta.state"))
    theta = opt.theta
    np.testing.assert_allclose(theta["lstm_init_state"].hidden[0], trace["lstm_init_hidden"])
    for t, state in golden.replay(opt, trace):
        np.testing.assert_allclose(
            state.lstm_hidden_state.hidden[0], trace["lstm_hidden_after"][t], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            state.lstm_hidden_state.cell[0], trace["lstm_cell_after"][t], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            state.loss_buffer["means"], trace["loss_buffer_means_after"][t], rtol=1e-6
        )
        np.testing.assert_allclose(
            state.loss_buffer["running_min"], trace["loss_buffer_running_min_after"][t], rtol=1e-6
        )
    np.testing.assert_allclose(state.loss_buffer["decays"], trace["loss_buffer_decays"], rtol=1e-6)


@pytest.mark.parametrize("name", ["celo", "celo_phase1", "celo_adam"])
def test_lr_mult_and_scheduler_inputs_match(name):
    """Replay the scheduler half of each update and compare lr_mult and its inputs."""
    from celo.lopt import loss_buffer_features, loss_buffer_update
    from celo.optimizers.celo import scheduler_inputs

    trace = golden.load(f"{name}_update_trace")
    lopt = get_optimizer(name)
    opt = init_lopt_from_ckpt(lopt, str(CHECKPOINTS / CKPT[name] / "theta.state"))

    @jax.jit
    def scheduler(prev, loss):
        buf = loss_buffer_update(prev.loss_buffer, loss)
        row = scheduler_inputs(prev.iteration, prev.num_steps, loss_buffer_features(buf))
        return row, lopt.scheduler_step(opt.theta, prev, loss)[2]

    prev = opt.init(golden.toy_tree(trace, "init_"), num_steps=100)
    for t, state in golden.replay(opt, trace):
        row, lr_mult = scheduler(prev, trace["losses"][t])
        np.testing.assert_allclose(row, trace["sched_inputs"][t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lr_mult, trace["lr_mult"][t], rtol=1e-5)
        prev = state


def test_released_lr_mult_self_check():
    """Spec §4.10: lr_mult on the first two updates from the released checkpoints."""
    for name, first, second in [("celo", 0.443601, 0.912860), ("celo_adam", 0.153561, 0.191659)]:
        lopt = get_optimizer(name)
        opt = init_lopt_from_ckpt(lopt, str(CHECKPOINTS / name / "theta.state"))
        params = {"w": np.ones((3, 2), np.float32)}
        state = opt.init(params, num_steps=100)
        _, _, lr, _ = lopt.scheduler_step(opt.theta, state, 1.0)
        np.testing.assert_allclose(lr[0], first, rtol=1e-5)
        state = opt.update(state, {"w": np.ones((3, 2), np.float32)}, loss=1.0)
        _, _, lr, _ = lopt.scheduler_step(opt.theta, state, 1.0)
        np.testing.assert_allclose(lr[0], second, rtol=1e-5)


@pytest.mark.parametrize("step", [0, 1])
def test_mlp_features_match_golden(step):
    """The 30 raw and normalised MLP inputs of ``linear_0/w`` and the derived MLP output."""
    feats = golden.load("celo_features_step0")
    trace = golden.load("celo_update_trace")
    np.testing.assert_array_equal(feats["group_channels"], GROUP_CHANNELS)
    lopt = get_optimizer("celo")
    opt = init_lopt_from_ckpt(lopt, str(CHECKPOINTS / "celo" / "theta.state"))
    prev = opt.init(golden.toy_tree(trace, "init_"), num_steps=100)
    for t, state in golden.replay(opt, trace, n_updates=step + 1):
        if t < step:
            prev = state
    key = "mlp/~/linear_0"
    p = np.asarray(prev.params[key]["w"])
    g = np.asarray(trace["grads_linear_0_w"][step])
    view, prev_view = reference_view(state), reference_view(prev)
    fac = view["fac_rolling"]
    _, fac_g = factored_update(
        prev_view["fac_rolling"],
        golden.toy_tree(trace, "grads_", step),
        lopt.initial_adafactor_decays,
    )
    m = view["mom_rolling"].m[key]["w"]
    rms = view["rms_rolling"].rms[key]["w"]
    groups = mlp_input_groups(
        p,
        g,
        m,
        rms,
        fac_g[key]["w"],
        fac.v_col[key]["w"],
        fac.v_row[key]["w"],
        fac.v_diag[key]["w"],
    )
    raw = np.concatenate(groups, axis=-1)
    np.testing.assert_allclose(
        raw, feats[f"step{step}_raw_inputs_linear_0_w"], rtol=2e-6, atol=1e-7
    )
    norm = np.concatenate(
        [
            x * jax.lax.rsqrt(1e-5 + np.mean(np.square(x), axis=(0, 1), keepdims=True))
            for x in groups
        ],
        axis=-1,
    )
    np.testing.assert_allclose(
        norm, feats[f"step{step}_norm_inputs_linear_0_w"], rtol=2e-5, atol=1e-6
    )

    ff = {k: v[0] for k, v in opt.theta["ff_mod_stack"]["~"].items()}
    weights = {k: ff[k] for k in ("b0", "w1", "b1", "w2", "b2")}
    weights["w0"] = stack_w0(ff)
    d, mu = mlp_outputs(
        weights,
        p,
        g,
        m,
        rms,
        fac_g[key]["w"],
        fac.v_col[key]["w"],
        fac.v_row[key]["w"],
        fac.v_diag[key]["w"],
    )
    out = feats[f"step{step}_derived_mlp_out_linear_0_w"]
    np.testing.assert_allclose(d, out[..., 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mu, out[..., 1], rtol=1e-4, atol=1e-5)
    scale = feats[f"step{step}_derived_param_scale_linear_0_w"]
    np.testing.assert_allclose(np.sqrt(np.mean(p**2) + 1e-9), scale, rtol=1e-6)


@pytest.mark.parametrize("name", ["celo", "celo_adam"])
def test_released_checkpoint_round_trips_byte_identical(name, tmp_path):
    path = CHECKPOINTS / name / "theta.state"
    theta = checkpoints.load_state(str(path), get_optimizer(name).init(jax.random.PRNGKey(0)))
    out = tmp_path / "theta.state"
    checkpoints.save_state(str(out), theta, optimizer_name=name)
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", ["celo", "celo_phase1", "celo_adam"])
def test_final_accumulators_match_golden(name):
    """Momentum, RMS and factored statistics after 30 updates (reference layout)."""
    trace = golden.load(f"{name}_update_trace")
    lopt = get_optimizer(name, **({"track_factored_stats": True} if name == "celo_adam" else {}))
    opt = init_lopt_from_ckpt(lopt, str(CHECKPOINTS / CKPT[name] / "theta.state"))
    *_, (_, state) = golden.replay(opt, trace)
    if name == "celo_adam":
        view = {
            "mom_rolling": state.mom_rolling,
            "rms_rolling": state.rms_rolling,
            "fac_rolling": state.fac_rolling,
        }
    else:
        view = reference_view(state)
    for leaf in golden.LEAVES:
        module, param = f"mlp/~/{leaf[:8]}", leaf[-1]
        pairs = {
            "final_mom_": view["mom_rolling"].m,
            "final_rms_": view["rms_rolling"].rms,
            "final_fac_vrow_": view["fac_rolling"].v_row,
            "final_fac_vcol_": view["fac_rolling"].v_col,
            "final_fac_vdiag_": view["fac_rolling"].v_diag,
        }
        for prefix, tree in pairs.items():
            want = trace[prefix + leaf]
            got = np.asarray(tree[module][param])
            assert got.shape == want.shape, (prefix + leaf, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12, err_msg=prefix + leaf)
