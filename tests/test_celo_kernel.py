"""The fast Celo kernel equals the literal formulation for every tensor shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo.lopt import (
    FactoredAccum,
    MomAccumulator,
    RmsAccumulator,
    factored_init,
    factored_update,
    rolling_mom_update,
    rolling_rms_update,
)
from celo.lopt.celo_kernel import LeafState, celo_leaf_update, init_leaf
from celo.optimizers.celo import init_ff_mod, interpolate_ff, mlp_param_step

DECAYS = ((0.9, 0.99, 0.999), (0.999,), (0.9, 0.99, 0.999))


@pytest.mark.parametrize("shape", [(), (5,), (7, 5), (5, 7), (6, 6), (3, 3, 4, 8), (2, 9, 4)])
@pytest.mark.parametrize("phase2", [False, True])
def test_kernel_matches_literal_form(shape, phase2):
    keys = jax.random.split(jax.random.PRNGKey(sum(shape) + 3 * phase2), 8)
    p = jax.random.normal(keys[0], shape)
    g = 0.3 * jax.random.normal(keys[1], shape)
    stacked = jax.tree_util.tree_map(lambda w: w[None], init_ff_mod(keys[2], 4)["~"])
    weights = interpolate_ff(stacked, jnp.ones((1,)))
    weights = jax.tree_util.tree_map(lambda w: w * 3.0, weights)  # make the MLP non-trivial
    lr_mult = jnp.float32(0.7) if phase2 else None

    # Previous accumulators: random positive statistics in both layouts.
    m_prev = 0.1 * jax.random.normal(keys[3], shape + (3,))
    v_prev = 0.05 * jnp.abs(jax.random.normal(keys[4], shape + (1,)))
    fac_prev = factored_init({"x": p}, DECAYS[2])
    fac_prev = jax.tree_util.tree_map(
        lambda z: 0.02 * jnp.abs(jax.random.normal(keys[5], z.shape)) if z.size else z, fac_prev
    )
    shape1 = shape if shape else (1,)
    kernel_state = LeafState(
        m=tuple(m_prev[..., k].reshape(shape1) for k in range(3)),
        rms=(v_prev[..., 0].reshape(shape1),),
        v_row=tuple(fac_prev.v_row["x"][..., k] for k in range(fac_prev.v_row["x"].shape[-1]))
        if fac_prev.v_row["x"].size
        else (),
        v_col=tuple(fac_prev.v_col["x"][..., k] for k in range(fac_prev.v_col["x"].shape[-1]))
        if fac_prev.v_col["x"].size
        else (),
        v_diag=tuple(fac_prev.v_diag["x"][..., k].reshape(shape1) for k in range(3))
        if fac_prev.v_diag["x"].size
        else (),
    )
    assert jax.tree_util.tree_structure(kernel_state) == jax.tree_util.tree_structure(
        init_leaf(p, 3, 1, 3)
    )

    mom = rolling_mom_update(
        MomAccumulator({"x": m_prev}, jnp.zeros(3, jnp.int32)), {"x": g}, DECAYS[0]
    )
    rms = rolling_rms_update(
        RmsAccumulator({"x": v_prev}, jnp.zeros(1, jnp.int32)), {"x": g}, DECAYS[1]
    )
    fac, fac_g = factored_update(
        FactoredAccum(**{k: getattr(fac_prev, k) for k in ("v_col", "v_row", "v_diag")}),
        {"x": g},
        DECAYS[2],
    )
    want = mlp_param_step(
        weights,
        p,
        g,
        mom.m["x"],
        rms.rms["x"],
        fac_g["x"],
        fac.v_col["x"],
        fac.v_row["x"],
        fac.v_diag["x"],
        exp_mult=1e-3,
        step_mult=1e-3,
        lr_mult=lr_mult,
    )
    got, new_state = jax.jit(lambda *a: celo_leaf_update(*a, DECAYS, lr_mult=lr_mult))(
        weights, p, g, kernel_state
    )

    step_want, step_got = np.asarray(p - want), np.asarray(p - got)
    assert got.shape == p.shape
    np.testing.assert_allclose(
        step_got, step_want, rtol=1e-4, atol=1e-5 * np.max(np.abs(step_want))
    )
    np.testing.assert_allclose(
        np.stack(new_state.m, -1).reshape(mom.m["x"].shape), mom.m["x"], rtol=1e-6, atol=1e-8
    )  # atol: FMA rounding on cancelling sums
    np.testing.assert_allclose(new_state.rms[0].reshape(shape), rms.rms["x"][..., 0], rtol=1e-6)
