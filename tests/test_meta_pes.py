"""PES and FullES against exact gradients on a 2-D quadratic, plus the estimator math."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from celo.meta import pes
from celo.meta.estimators import FullES, TruncatedPES
from celo.meta.schedules import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
)
from celo.meta.truncated_step import VectorizedTruncatedStep
from tests.meta_quadratic import LearnedSGDM, QuadraticFamily, full_unroll_meta_loss

STD = 0.01


def _check_unbiased(estimates: np.ndarray, truths: np.ndarray, rel: float) -> None:
    """Per-seed errors must average out: |mean error| < 4 standard errors, and < rel·|truth|.

    Each row is one independent seed (different particles and tasks); the
    standard error comes from the spread of the rows, so the bound is a
    statistical one (a 4σ band) rather than a tuned constant.
    """
    err = estimates - truths
    se = err.std(axis=0, ddof=1) / np.sqrt(len(err))
    mean_err = err.mean(axis=0)
    assert np.all(np.abs(mean_err) < 4 * se + 1e-6), (mean_err, se)
    truth = truths.mean(axis=0)
    assert np.linalg.norm(mean_err) < rel * np.linalg.norm(truth), (mean_err, truth)


def test_pes_window_math_by_hand():
    # Two particles, four steps; particle 1 finishes at step 2 (inclusive split).
    eps = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
    acc = jnp.asarray([[0.5, 0.5], [1.0, -1.0]])
    lp = jnp.asarray([[3.0, 1.0], [5.0, 2.0], [7.0, 0.0], [9.0, 4.0]])
    ln = jnp.asarray([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    done = jnp.asarray([[0, 0], [0, 1], [0, 0], [0, 0]], bool)
    mask = jnp.asarray([[1, 1], [1, 1], [1, 0], [1, 1]], bool)
    out = pes.pes_window(eps, acc, lp, ln, done, mask, std=0.5)
    scale = 1.0 / (2 * 0.25)
    # Particle 0: no reset, A = mean Δ = (2+4+6+8)/4 = 5, B = 0.
    np.testing.assert_allclose(out.grads[0], 5.0 * (acc[0] + eps[0]) * scale)
    np.testing.assert_allclose(out.accumulator[0], acc[0] + eps[0])
    # Particle 1: Δ = 1, 1, (masked), 3; D = 3; A covers step 1 only, B steps 2 and 4.
    a, b = 1.0 / 3, (1.0 + 3.0) / 3
    np.testing.assert_allclose(
        out.grads[1], (a * (acc[1] + eps[1]) + b * eps[1]) * scale, rtol=1e-6
    )
    np.testing.assert_allclose(out.accumulator[1], eps[1])  # reset: only the new ε remains
    np.testing.assert_allclose(out.loss, [(24 + 4) / 8, (7 + 2) / 6], rtol=1e-6)
    assert out.finished.tolist() == [False, True]


def test_pes_window_drops_nonfinite_steps():
    eps = jnp.ones((1, 3))
    lp = jnp.asarray([[1.0], [jnp.nan], [2.0]])
    ln = jnp.asarray([[0.0], [0.0], [jnp.inf]])
    ones = jnp.ones((3, 1), bool)
    out = pes.pes_window(eps, jnp.zeros((1, 3)), lp, ln, ~ones, ones, std=1.0)
    assert np.all(np.isfinite(out.grads))
    np.testing.assert_allclose(out.grads, 0.5 * np.ones((1, 3)))  # only step 0 counts: Δ = 1
    assert int(out.masked_nonfinite[0]) == 2


def test_perturbation_mask_is_exact():
    mask = np.asarray([True, False, True, False])
    e1 = pes.sample_perturbation(4, jax.random.PRNGKey(3), 0.1, mask)
    e2 = pes.sample_perturbation(4, jax.random.PRNGKey(3), 0.1, None)
    assert np.all(np.asarray(e1)[~mask] == 0.0)
    np.testing.assert_array_equal(np.asarray(e1)[mask], np.asarray(e2)[mask])


def test_truncated_step_resets_on_schedule():
    lopt, family = LearnedSGDM(), QuadraticFamily()
    step = VectorizedTruncatedStep(family, lopt, ConstantTruncationSchedule(3))
    theta = lopt.init(None)
    keys = jax.random.split(jax.random.PRNGKey(0), 4).reshape(1, 4, 2)
    state = step.init(theta, keys)
    theta_pm = jax.tree_util.tree_map(lambda t: jnp.broadcast_to(t, (1, 4, 2)), theta)
    new, out = jax.jit(lambda s: step.unroll(theta_pm, s, keys, None, 9))(state)
    mask = np.asarray(out.mask[:, 0, 0, 0])
    done = np.asarray(out.is_done[:, 0, 0, 0])
    # Three training steps, the last flagged done, then one reset step (mask 0, loss 0).
    assert mask.tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert done.tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert np.all(np.asarray(out.loss)[~np.asarray(out.mask)] == 0.0)
    # The two signs share every key: same tasks, same flags.
    np.testing.assert_array_equal(new.task_param["a"][..., 0, :], new.task_param["a"][..., 1, :])
    assert not np.allclose(new.task_param["a"], state.task_param["a"])  # resampled at reset


def test_schedules():
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    lengths = jax.vmap(LogUniformLengthSchedule(100, 2000).init)(keys)
    assert lengths.dtype == jnp.int32
    assert 100 <= int(lengths.min()) and int(lengths.max()) < 2000
    # Log-uniform: the median is near sqrt(100·2000) ≈ 447.
    assert 380 < float(np.median(lengths)) < 520
    done, length = NeverEndingTruncationSchedule(7).next(jnp.int32(7), jnp.int32(10**6), keys[0])
    assert not bool(done) and int(length) == 7


def test_random_initial_offset_staggers_only_the_step_counter():
    lopt = LearnedSGDM()
    step = VectorizedTruncatedStep(QuadraticFamily(), lopt, ConstantTruncationSchedule(50), 2000)
    keys = jax.random.split(jax.random.PRNGKey(1), 64).reshape(1, 64, 2)
    state = step.init(lopt.init(None), keys)
    steps = np.asarray(state.inner_step)
    assert steps.min() >= 0 and steps.max() < 2000 and len(np.unique(steps)) > 30
    assert np.all(np.asarray(state.opt_state.iteration) == 0)


def _estimator_inputs(seed: int, num_particles: int):
    lopt = LearnedSGDM()
    theta = lopt.init(None)
    flat, unravel = ravel_pytree(theta)
    return lopt, theta, flat, unravel


def test_pes_matches_grad_of_full_unroll():
    """PES over the windows of one trajectory ≈ jax.grad of its mean loss (8 seeds × 512)."""
    num_particles, windows, k = 512, 4, 5
    lopt, theta, flat, unravel = _estimator_inputs(0, num_particles)
    # Horizon far beyond the 20 steps looked at: no reset inside the windows.
    step = VectorizedTruncatedStep(QuadraticFamily(), lopt, ConstantTruncationSchedule(1000))
    est = TruncatedPES(
        step,
        unravel,
        num_families=1,
        num_particles=num_particles,
        std=STD,
        steps_per_jit=k,
        trunc_length=k,
    )
    init = jax.jit(est.init)
    estimate = jax.jit(lambda s, key: est.estimate(flat, s, key, None))
    truth_fn = jax.jit(
        jax.vmap(
            jax.grad(lambda th, cfg: full_unroll_meta_loss(th, cfg, windows * k)), in_axes=(None, 0)
        )
    )
    estimates, truths = [], []
    for seed in range(8):
        state = init(flat, jax.random.PRNGKey(100 + seed))
        cfgs = jax.tree_util.tree_map(lambda x: x[0, :, 0], state.inner.task_param)
        total = jnp.zeros_like(flat)
        for w in range(windows):
            grads, loss, state, stats = estimate(state, jax.random.PRNGKey(1000 * seed + w))
            total = total + grads[0]
        estimates.append(np.asarray(total / windows))
        truths.append(
            np.asarray(
                ravel_pytree(jax.tree_util.tree_map(lambda g: g.mean(0), truth_fn(theta, cfgs)))[0]
            )
        )
    _check_unbiased(np.stack(estimates), np.stack(truths), rel=0.1)


def test_full_es_matches_grad_of_full_unroll():
    """FullES with the average loss and no sign trick ≈ jax.grad (fixed task, 8 seeds × 512)."""
    num_particles, horizon = 512, 20
    lopt, theta, flat, unravel = _estimator_inputs(0, num_particles)
    family = QuadraticFamily(fixed=True)
    step = VectorizedTruncatedStep(family, lopt, NeverEndingTruncationSchedule())
    est = FullES(
        step,
        unravel,
        num_families=1,
        num_particles=num_particles,
        std=STD,
        steps_per_jit=5,
        horizon=ConstantTruncationSchedule(horizon),
        loss_type="avg",
    )
    estimate = jax.jit(lambda key: est.estimate(flat, est.init(flat, key), key, None))
    truth = ravel_pytree(jax.grad(full_unroll_meta_loss)(theta, family.sample(None), horizon))[0]
    estimates = [np.asarray(estimate(jax.random.PRNGKey(seed))[0][0]) for seed in range(8)]
    _check_unbiased(np.stack(estimates), np.tile(np.asarray(truth), (8, 1)), rel=0.1)


@pytest.mark.parametrize("loss_type", ["last_recompute"])
def test_full_es_last_recompute_and_sign(loss_type):
    lopt, theta, flat, unravel = _estimator_inputs(0, 64)
    step = VectorizedTruncatedStep(
        QuadraticFamily(fixed=True), lopt, NeverEndingTruncationSchedule()
    )
    est = FullES(
        step,
        unravel,
        num_families=1,
        num_particles=64,
        std=STD,
        steps_per_jit=5,
        horizon=LogUniformLengthSchedule(5, 12),
        loss_type=loss_type,
        recompute_samples=3,
        sign_delta_loss_scalar=1.0,
    )
    grads, loss, _, stats = jax.jit(lambda k: est.estimate(flat, None, k, None))(
        jax.random.PRNGKey(0)
    )
    # With the sign trick every |Δ| is 1 (or 0), so each contribution is ±ε/(2σ²).
    assert set(np.unique(np.abs(np.asarray(stats["delta_loss"])))) <= {0.0, 1.0}
    assert np.all(np.isfinite(grads)) and np.isfinite(float(loss[0]))


def test_full_es_last_recompute_with_device_data():
    """The recompute batches are gathered per particle from the resident split (digits MLP)."""
    from celo.meta.batches import resident_data
    from celo.tasks import get_task_families

    family = get_task_families("ImageMLP_Digits8_Relu32_bs64")[0]
    data = resident_data([family])
    lopt = LearnedSGDM()
    flat, unravel = ravel_pytree(lopt.init(None))
    step = VectorizedTruncatedStep(family, lopt, NeverEndingTruncationSchedule())
    est = FullES(
        step,
        unravel,
        num_families=1,
        num_particles=4,
        std=STD,
        steps_per_jit=5,
        horizon=LogUniformLengthSchedule(5, 12),
        loss_type="last_recompute",
        recompute_samples=3,
    )
    grads, loss, _, _ = jax.jit(lambda k, d: est.estimate(flat, None, k, d))(
        jax.random.PRNGKey(0), data
    )
    assert grads.shape == (1, flat.shape[0]) and np.all(np.isfinite(grads))
    assert 0.0 < float(loss[0]) <= 1.5 * np.log(10) + 1e-6  # a normalised cross-entropy
