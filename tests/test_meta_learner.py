"""Outer update: frozen keys per phase (exact and reference modes), NaN handling, devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from celo.factory import get_optimizer
from celo.meta import pes
from celo.meta.estimators import TruncatedPES
from celo.meta.learner import MetaLearner
from celo.meta.schedules import LogUniformLengthSchedule
from celo.meta.truncated_step import VectorizedTruncatedStep
from celo.utils import pytree_to_ordered_dict
from tests.meta_quadratic import LearnedSGDM, QuadraticFamily, QuadraticTask

REPO = Path(__file__).resolve().parents[1]
LR, WD, ITERS = 1e-2, 1e-4, 3


def _learner(lopt, family, freeze_exact=True, train_partial=True, particles=2):
    theta = lopt.init(jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree(theta)
    mask = None
    if train_partial:
        mask = pes.flat_mask(theta, pes.trainable_mask(theta, lopt.get_frozen_param_keys()))
    step = VectorizedTruncatedStep(family, lopt, LogUniformLengthSchedule(4, 9), 6)
    est = TruncatedPES(
        step,
        unravel,
        num_families=1,
        num_particles=particles,
        std=0.01,
        steps_per_jit=2,
        trunc_length=4,
        mask=mask if freeze_exact else None,
    )
    learner = MetaLearner((est,), (("quadratic",),), unravel, LR, WD, mask, freeze_exact)
    return theta, flat, learner


def _train(learner, flat, iters=ITERS):
    state = jax.jit(learner.init)(flat, jax.random.PRNGKey(1))
    step = jax.jit(learner.step)
    for _ in range(iters):
        state, metrics = step(state, (None,))
    return learner.theta_tree(state), metrics


def _changed(before, after) -> dict[str, bool]:
    a, b = pytree_to_ordered_dict(before), pytree_to_ordered_dict(after)
    return {k: not np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a}


@pytest.mark.parametrize(
    "name, trained",
    [
        ("celo_phase1", ("ff_mod_stack",)),
        ("celo", ("rnn_params", "lstm_init_state")),
    ],
)
def test_phase_trains_only_its_leaves_and_freezes_exactly(name, trained):
    lopt = get_optimizer(name)
    theta, flat, learner = _learner(lopt, QuadraticFamily())
    after, metrics = _train(learner, flat)
    changed = _changed(theta, after)
    for path, moved in changed.items():
        if any(t in path for t in trained):
            assert moved, f"{path} should train in {name}"
        else:
            assert not moved, f"{path} is frozen in {name} but changed"
    assert np.isfinite(float(metrics["meta_loss"]))


def test_reference_mode_perturbs_and_decays_frozen_leaves():
    lopt = get_optimizer("celo_phase1")
    theta, flat, learner = _learner(lopt, QuadraticFamily(), freeze_exact=False)
    assert learner.estimators[0].mask is None  # every leaf is perturbed
    after, _ = _train(learner, flat)
    a, b = pytree_to_ordered_dict(theta), pytree_to_ordered_dict(after)
    decay = (1.0 - LR * WD) ** ITERS
    for path in a:
        if "ff_mod_stack" in path:
            continue
        # Masked gradient, so only the decoupled weight decay moves a frozen leaf.
        np.testing.assert_allclose(
            np.asarray(b[path]), np.asarray(a[path]) * decay, rtol=1e-6, atol=1e-12, err_msg=path
        )
        if np.any(np.asarray(a[path]) != 0):
            assert not np.array_equal(np.asarray(a[path]), np.asarray(b[path]))


class _NaNTask(QuadraticTask):
    def loss(self, params, key, data):
        loss = super().loss(params, key, data)
        return jnp.where(params["x"][0] > -100.0, jnp.nan, loss)


class _NaNFamily(QuadraticFamily):
    def task_fn(self, cfg):
        return _NaNTask(cfg)


def test_nonfinite_inner_losses_never_reach_theta():
    theta, flat, learner = _learner(LearnedSGDM(), _NaNFamily(), train_partial=False)
    after, metrics = _train(learner, flat, iters=2)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after))
    assert int(metrics["nonfinite_inner_losses"]) > 0
    assert int(metrics["masked_nonfinite"]) > 0
    assert np.isfinite(float(metrics["meta_loss"]))


DEVICE_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.flatten_util import ravel_pytree
    from celo.meta.estimators import TruncatedPES
    from celo.meta.learner import MetaLearner
    from celo.meta.schedules import ConstantTruncationSchedule
    from celo.meta.trainer import make_mesh
    from celo.meta.truncated_step import VectorizedTruncatedStep
    from tests.meta_quadratic import LearnedSGDM, QuadraticFamily

    assert len(jax.devices()) == 4, jax.devices()
    lopt = LearnedSGDM()
    flat, unravel = ravel_pytree(lopt.init(None))
    # Horizon 3 with windows of 4: a reset (and the reset branch) in every window.
    step = VectorizedTruncatedStep(QuadraticFamily(), lopt, ConstantTruncationSchedule(3), 5)
    est = TruncatedPES(step, unravel, num_families=1, num_particles=8, std=0.01,
                       steps_per_jit=2, trunc_length=4)
    results = []
    for mesh in (None, make_mesh(8)):
        learner = MetaLearner((est,), (("q",),), unravel, 1e-2, mesh=mesh)
        state = jax.jit(learner.init)(flat, jax.random.PRNGKey(0))
        state = jax.device_put(state, learner.shardings(state))
        run = jax.jit(learner.step)
        grads = []
        for _ in range(3):
            state, m = run(state, (None,))
            grads.append(np.asarray(m["grad_norm"]))
        acc = state.estimator_states[0].accumulator
        devices = len(acc.sharding.device_set)
        results.append((np.asarray(state.theta), np.asarray(acc), grads, devices))
    (t1, a1, g1, d1), (t4, a4, g4, d4) = results
    assert (d1, d4) == (1, 4), (d1, d4)
    print("bitwise", np.array_equal(t1, t4), np.array_equal(a1, a4))
    np.testing.assert_allclose(t4, t1, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a4, a1, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g4, g1, rtol=1e-6)
    print("OK")
""")


def test_four_devices_equal_one_device():
    """Particles sharded over 4 host devices give the single-device estimate.

    Every random draw is made from keys split before sharding and the
    per-particle contributions are gathered before they are averaged, so the
    numbers agree; the tolerance (1e-6 relative) only allows for XLA choosing
    different vectorisations for 2 and 8 particles per device.
    """
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
