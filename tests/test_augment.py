"""Weight reparameterisation: the function is unchanged, the gradients scale by s."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo.tasks import (
    ReparamWeights,
    ReparamWeightsFamily,
    ReparamWeightsListFamily,
    single_task_to_family,
)
from celo.tasks.base import DataSpec
from celo.tasks.image_mlp import _MLPImageTask, _MLPImageTaskNorm
from celo.tasks.sources import image_batch

KEY = jax.random.PRNGKey(0)
RANGE = (0.01, 100.0)


def synthetic_task(norm: str | None = None):
    def make():
        raise AssertionError("synthetic tasks load no data")

    spec = DataSpec(image_batch(32, 8, 8, 1), make)
    if norm:
        return _MLPImageTaskNorm(spec, [16], norm, num_classes=10)
    return _MLPImageTask(spec, [16, 8], num_classes=10)


def batch_for(task, key=jax.random.PRNGKey(7)):
    k1, k2 = jax.random.split(key)
    ab = task.abstract_batch
    return {
        "image": jax.random.uniform(k1, ab["image"].shape),
        "label": jax.random.randint(k2, ab["label"].shape, 0, 10),
    }


def tree_allclose(a, b, rtol):
    """Leafwise allclose; atol is relative to the largest entry of ``b``.

    Gradients that are exactly zero in theory (a bias right before a
    BatchNorm) are float noise; a global atol keeps them from dominating.
    """
    b_leaves = jax.tree_util.tree_leaves(b)
    atol = 10 * rtol * max(float(np.max(np.abs(y))) for y in b_leaves)
    for x, y in zip(jax.tree_util.tree_leaves(a), b_leaves, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def check_invariance(inner, aug):
    """loss(reparam init) == loss(init); ∂L/∂w = s ⊙ ∇f(w ⊙ s) = s ⊙ ∇f(w₀)."""
    batch = batch_for(inner)
    w0, s0 = inner.init_with_state(KEY)
    w, s = aug.init_with_state(KEY)
    scales = aug.scales(w)
    tree_allclose(jax.tree_util.tree_map(lambda a, c: a * c, w, scales), w0, rtol=1e-5)
    (l0, _), g0 = jax.value_and_grad(inner.loss_with_state, has_aux=True)(w0, s0, KEY, batch)
    (l1, _), g1 = jax.value_and_grad(aug.loss_with_state, has_aux=True)(w, s, KEY, batch)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    tree_allclose(g1, jax.tree_util.tree_map(lambda g, c: g * c, g0, scales), rtol=1e-4)
    np.testing.assert_allclose(aug.loss(w, KEY, batch), l0, rtol=1e-5)
    return scales


@pytest.mark.parametrize("norm", [None, "batch_norm"])
@pytest.mark.parametrize("level", ["global", "tensor", "parameter"])
def test_reparam_family_keeps_the_function_and_scales_gradients(level, norm):
    inner = synthetic_task(norm)
    family = ReparamWeightsFamily(single_task_to_family(inner), level, RANGE)
    assert family.name == f"ReparamWeights{level}_{inner.name}"
    aug = family.task_fn(family.sample(jax.random.PRNGKey(3)))
    scales = check_invariance(inner, aug)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(scales)]
    flat = np.concatenate([np.ravel(x) for x in leaves])
    assert np.all(flat >= RANGE[0]) and np.all(flat <= RANGE[1])
    per_leaf = {float(np.ravel(x)[0]) for x in leaves}
    if level == "global":
        assert all(np.ndim(x) == 0 for x in leaves) and len(per_leaf) == 1
    elif level == "tensor":
        assert all(np.ndim(x) == 0 for x in leaves) and len(per_leaf) == len(leaves)
    else:
        assert all(x.size == 1 or np.unique(x).size == x.size for x in leaves)
    if level != "global":
        assert np.ptp(np.log(flat)) > 1.0  # spread over the log range, not stuck near 1


def test_parameter_level_regenerates_scales_from_stored_keys():
    inner = synthetic_task()
    family = ReparamWeightsFamily(single_task_to_family(inner), "parameter", RANGE)
    cfg = family.sample(KEY)
    assert set(cfg) == {"sub_cfg", "param_scale_keys"}  # keys, not full-size scale tensors
    params = inner.init(KEY)
    a = family.task_fn(cfg).scales(params)
    b = family.task_fn(jax.tree_util.tree_map(jnp.array, cfg)).scales(params)
    tree_allclose(a, b, rtol=0)
    c = family.task_fn(family.sample(jax.random.PRNGKey(1))).scales(params)
    assert not np.allclose(a["mlp/~/linear_0"]["w"], c["mlp/~/linear_0"]["w"])


def test_scalar_reparam_and_structure_check():
    inner = synthetic_task()
    check_invariance(inner, ReparamWeights(inner, 7.5))
    with pytest.raises(ValueError, match="structure"):
        ReparamWeights(inner, {"a": 1.0}).init(KEY)


def test_families_sample_fresh_scales_under_vmap():
    inner = synthetic_task()
    family = ReparamWeightsFamily(single_task_to_family(inner), "global", (1e-3, 1e3))
    cfgs = jax.vmap(family.sample)(jax.random.split(KEY, 64))
    s = np.asarray(cfgs["param_scale"])
    assert s.shape == (64,) and len(np.unique(s)) == 64
    # log-uniform on [1e-3, 1e3]: about half the draws below 1
    assert 16 < np.sum(s < 1) < 48


LEVELS = ["none", "none", "global", "global", "tensor", "tensor", "parameter"]
RANGES = [(1e-3, 1e3), (1e-2, 1e2), (1e-1, 1e1)]


def test_list_family_range_varies_within_one_compiled_function():
    family = ReparamWeightsListFamily(single_task_to_family(synthetic_task()), LEVELS, RANGES)
    traces = []

    @jax.jit
    def sampled_range(key):
        traces.append(1)
        return family.sample(key)["param_scale_range"]

    seen = {tuple(np.asarray(sampled_range(jax.random.PRNGKey(i)))) for i in range(24)}
    assert len(traces) == 1  # one compilation ...
    assert len(seen) == 3  # ... that still draws every range
    assert seen == {tuple(np.float32(r)) for r in RANGES}


def test_list_family_level_weights_follow_duplicates():
    family = ReparamWeightsListFamily(single_task_to_family(synthetic_task()), LEVELS, RANGES)
    cfgs = jax.jit(jax.vmap(family.sample))(jax.random.split(KEY, 7000))
    counts = collections.Counter(np.asarray(cfgs["level"]).tolist())
    ids = {"global": 0, "tensor": 1, "parameter": 2, "none": 3}
    for level, weight in [("none", 2), ("global", 2), ("tensor", 2), ("parameter", 1)]:
        assert counts[ids[level]] == pytest.approx(7000 * weight / 7, rel=0.08), counts
    assert family.name.startswith("ReparamWeightsList_")


@pytest.mark.parametrize("level", ["global", "tensor", "parameter", "none"])
def test_list_family_levels_keep_the_function(level):
    inner = synthetic_task()
    family = ReparamWeightsListFamily(single_task_to_family(inner), [level], [(1e-2, 1e2)])
    aug = family.task_fn(family.sample(jax.random.PRNGKey(5)))
    scales = check_invariance(inner, aug)
    flat = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(scales)])
    if level == "none":
        np.testing.assert_array_equal(flat, 1.0)
    else:
        assert np.all((flat >= 1e-2) & (flat <= 1e2)) and not np.allclose(flat, 1.0)
        leaf_w = np.asarray(scales["mlp/~/linear_0"]["w"])
        assert (np.unique(leaf_w).size > 1) == (level == "parameter")


def test_list_family_task_fn_under_jit_and_vmap():
    inner = synthetic_task()
    family = ReparamWeightsListFamily(single_task_to_family(inner), LEVELS, RANGES)

    @jax.jit
    @jax.vmap
    def run(key):
        task = family.task_fn(family.sample(key))
        params = task.init(key)
        return task.loss(params, key, batch_for(inner))

    keys = jax.random.split(KEY, 16)
    got = run(keys)
    want = jax.jit(jax.vmap(lambda k: inner.loss(inner.init(k), k, batch_for(inner))))(keys)
    np.testing.assert_allclose(got, want, rtol=1e-4)
