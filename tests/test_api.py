"""The two faces of one implementation, and the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from celo.factory import UnknownOptimizerError, get_optimizer, is_learned, names
from celo.optimizers.base import LearnedOptimizer, Optimizer
from celo.utils import init_lopt_from_ckpt
from tests.conftest import CHECKPOINTS

LEARNED = [
    "celo_phase1",
    "celo",
    "celo_adam",
    "rnn_mlp",
    "adafac_mlp",
    "velo_s",
    "velo",
    "velo_4000",
    "nnadam",
    "celo2",
    "celo2base",
]
HANDCRAFTED = [
    "adam",
    "sgd",
    "sgdm",
    "adamw",
    "rmsprop",
    "fromage",
    "sm3",
    "lars",
    "lamb",
    "adabelief",
    "adafactor",
    "adagrad",
    "yogi",
    "radam",
    "nadamw",
]


def test_registry_has_every_reference_name_and_extras():
    assert set(LEARNED) <= set(names("learned"))
    assert set(HANDCRAFTED) <= set(names("handcrafted"))
    assert {"shampoo", "muon", "schedule_free_adamw"} <= set(names("handcrafted"))


@pytest.mark.parametrize(
    "alias, name",
    [
        ("celo-adam", "celo_adam"),
        ("velo-4000", "velo_4000"),
        ("rnn-mlp-lopt", "rnn_mlp"),
        ("adafac-mlp-lopt", "adafac_mlp"),
        ("velo-s", "velo_s"),
        ("celo2-base", "celo2base"),
        ("CELO", "celo"),
    ],
)
def test_hyphenated_hub_names(alias, name):
    assert get_optimizer(alias) == get_optimizer(name)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownOptimizerError) as e:
        get_optimizer("celo3")
    msg = str(e.value)
    assert "celo3" in msg and "celo_adam" in msg and "adam" in msg and "nadamw" in msg


def test_kinds():
    for n in LEARNED:
        assert is_learned(n) and isinstance(get_optimizer(n), LearnedOptimizer)
    for n in HANDCRAFTED:
        assert not is_learned(n) and isinstance(get_optimizer(n), Optimizer)


def _mlp_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "mlp/~/linear_0": {"w": jax.random.normal(k1, (5, 7)) * 0.3, "b": jnp.zeros(7)},
        "mlp/~/linear_1": {"w": jax.random.normal(k2, (7, 2)) * 0.3, "b": jnp.zeros(2)},
    }


def _loss(params, x):
    h = jnp.tanh(x @ params["mlp/~/linear_0"]["w"] + params["mlp/~/linear_0"]["b"])
    out = h @ params["mlp/~/linear_1"]["w"] + params["mlp/~/linear_1"]["b"]
    return jnp.mean(out**2)


@pytest.mark.parametrize("name", ["celo", "celo_adam"])
def test_optax_face_matches_lopt_face(name):
    """Celo in a plain optax loop takes the same steps as the lopt-style face."""
    opt = init_lopt_from_ckpt(get_optimizer(name), str(CHECKPOINTS / name / "theta.state"))
    x = jax.random.normal(jax.random.PRNGKey(3), (16, 5))
    params0 = _mlp_params(jax.random.PRNGKey(0))

    state = opt.init(params0, num_steps=20)
    for _ in range(5):
        loss, grad = jax.value_and_grad(_loss)(opt.get_params(state), x)
        state = opt.update(state, grad, loss=loss)
    lopt_params = opt.get_params(state)

    tx = opt.as_optax(num_steps=20)
    params, ostate = params0, tx.init(params0)
    for _ in range(5):
        loss, grad = jax.value_and_grad(_loss)(params, x)
        updates, ostate = tx.update(grad, ostate, params, loss=loss)
        params = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree_util.tree_leaves(lopt_params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_optax_face_composes_with_optax_chain():
    opt = init_lopt_from_ckpt(get_optimizer("celo"), str(CHECKPOINTS / "celo" / "theta.state"))
    tx = optax.chain(optax.clip_by_global_norm(1.0), opt.as_optax(num_steps=10))
    params = _mlp_params(jax.random.PRNGKey(1))
    state = tx.init(params)
    x = jnp.ones((4, 5))
    loss, grad = jax.value_and_grad(_loss)(params, x)
    updates, state = tx.update(grad, state, params, loss=loss)
    assert all(np.all(np.isfinite(u)) for u in jax.tree_util.tree_leaves(updates))


def test_missing_loss_and_horizon_are_clear_errors():
    opt = get_optimizer("celo").opt_fn(get_optimizer("celo").init(jax.random.PRNGKey(0)))
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="num_steps"):
        opt.init(params)
    state = opt.init(params, num_steps=10)
    with pytest.raises(ValueError, match="loss"):
        opt.update(state, params)


def test_scalar_and_high_rank_leaves():
    """Scalars (shape ()) and tensors of any rank are valid params."""
    opt = init_lopt_from_ckpt(get_optimizer("celo"), str(CHECKPOINTS / "celo" / "theta.state"))
    params = {
        "s": jnp.asarray(0.3, jnp.float32),
        "conv": jnp.ones((3, 3, 4, 8)) * 0.1,
        "v": jnp.ones((5,)),
    }
    state = opt.init(params, num_steps=10)
    for _ in range(3):
        state = opt.update(state, jax.tree_util.tree_map(jnp.ones_like, params), loss=1.0)
    new = opt.get_params(state)
    for k in params:
        assert new[k].shape == params[k].shape
        assert np.all(np.asarray(new[k]) < np.asarray(params[k]))


def test_theta_is_traced_not_baked_in():
    """Two thetas share one compiled update (theta is an argument, not a constant)."""
    from celo.optimizers.base import _lopt_update

    lopt = get_optimizer("celo")
    params = {"w": jnp.ones((4, 3))}
    sizes = []
    for seed in (0, 1):
        opt = lopt.opt_fn(lopt.init(jax.random.PRNGKey(seed)))
        state = opt.init(params, num_steps=10)
        opt.update(state, params, loss=1.0)
        sizes.append(_lopt_update._cache_size())
    assert sizes[0] == sizes[1]
