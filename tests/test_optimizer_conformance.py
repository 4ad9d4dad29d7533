"""One conformance table over every registered optimizer (the optax house habit).

Each optimizer must decrease a quadratic, accept ``loss`` as an extra argument
in its optax face, not recompile on its second ``update``, and round-trip its
state through ``jit``. Learned optimizers use random theta, except Celo and
Celo-Adam, which use the released weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from celo.factory import get_optimizer, is_learned, names
from celo.optimizers.base import _lopt_update, _optax_update
from celo.utils import init_lopt_from_ckpt
from tests.conftest import CHECKPOINTS

RELEASED = {"celo": "celo", "celo_phase1": "celo", "celo_adam": "celo_adam"}
# VeLO's step is lr_mult · MLP output with lr_mult a raw linear head: at a random
# theta its sign is arbitrary, so an untrained VeLO is not a descent method, and
# the trained VeLO-4000 weights are not available offline (spec §9.6).
NOT_A_DESCENT_METHOD_AT_RANDOM_THETA = {"velo", "velo_s", "velo_4000"}
# Per-optimizer learning rates for the quadratic (hand-designed ones only).
LR = {"sgd": 0.05, "sgdm": 0.02, "fromage": 0.01, "lars": 1.0, "adagrad": 0.05}
HORIZON = 200


def _target():
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    return {
        "mlp/~/linear_0": {"w": jax.random.normal(k1, (6, 5)), "b": jax.random.normal(k2, (5,))},
        "scale": jnp.asarray(0.5, jnp.float32),
    }


def _init_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    return {
        "mlp/~/linear_0": {
            "w": 0.5 * jax.random.normal(k1, (6, 5)),
            "b": 0.5 * jax.random.normal(k2, (5,)),
        },
        "scale": jnp.asarray(-0.5, jnp.float32),
    }


def quadratic(params):
    target = _target()
    sq = jax.tree_util.tree_map(lambda p, t: jnp.sum((p - t) ** 2), params, target)
    return 0.5 * sum(jax.tree_util.tree_leaves(sq))


def make(name: str):
    if is_learned(name):
        lopt = get_optimizer(name)
        if name in RELEASED:
            return init_lopt_from_ckpt(lopt, str(CHECKPOINTS / RELEASED[name] / "theta.state"))
        return lopt.opt_fn(lopt.init(jax.random.PRNGKey(0)))
    return get_optimizer(name, learning_rate=LR.get(name, 0.02))


@pytest.fixture(params=names(), ids=names())
def opt(request):
    return request.param, make(request.param)


def test_decreases_quadratic_lopt_face(opt, request):
    name, o = opt
    if name in NOT_A_DESCENT_METHOD_AT_RANDOM_THETA:
        request.applymarker(
            pytest.mark.xfail(reason="random-theta VeLO has an arbitrary step sign")
        )
    params = _init_params()
    state = o.init(params, num_steps=HORIZON)
    loss0 = float(quadratic(params))
    grad_fn = jax.jit(jax.value_and_grad(quadratic))
    for _ in range(HORIZON):
        loss, grad = grad_fn(o.get_params(state))
        state = o.update(state, grad, loss=loss)
    final = float(quadratic(o.get_params(state)))
    assert np.isfinite(final)
    assert final < loss0, f"{name}: loss {loss0:.4f} -> {final:.4f}"


def test_optax_face_accepts_loss_and_does_not_recompile(opt):
    name, o = opt
    tx = o.as_optax(num_steps=HORIZON)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = _init_params()
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grad = jax.value_and_grad(quadratic)(params)
        updates, state = tx.update(grad, state, params, loss=loss)
        return optax.apply_updates(params, updates), state, loss

    params, state, loss0 = step(params, state)
    size = step._cache_size()
    for _ in range(3):
        params, state, loss = step(params, state)
    assert step._cache_size() == size == 1, f"{name} recompiled"
    assert np.isfinite(float(loss))


def test_lopt_face_update_does_not_recompile(opt):
    name, o = opt
    fn = _lopt_update if is_learned(name) else _optax_update
    state = o.init(_init_params(), num_steps=HORIZON)
    grad = jax.grad(quadratic)(o.get_params(state))
    state = o.update(state, grad, loss=1.0)
    before = fn._cache_size()
    state = o.update(state, jax.grad(quadratic)(o.get_params(state)), loss=0.5)
    assert fn._cache_size() == before, f"{name}: second update recompiled"


def test_state_round_trips_through_jit(opt):
    name, o = opt
    state = o.init(_init_params(), num_steps=HORIZON)
    state = o.update(state, jax.grad(quadratic)(o.get_params(state)), loss=1.0)
    back = jax.jit(lambda s: s)(state)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    grad = jax.grad(quadratic)(o.get_params(back))
    s1 = o.update(state, grad, loss=0.5)
    s2 = o.update(back, grad, loss=0.5)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_array_equal(a, b)
