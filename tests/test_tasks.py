"""Task layer: model shapes and conventions, registry, suites and real-data smoke tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import celo.tasks as ct
from celo.tasks import layers
from celo.tasks.base import DataSpec
from celo.tasks.image_mlp import _MLPImageTask, _MLPImageTaskNorm
from celo.tasks.sources import image_batch
from tests.conftest import GOLDEN

KEY = jax.random.PRNGKey(0)


def shapes(task):
    params, _ = jax.eval_shape(task.init_with_state, KEY)
    return jax.tree_util.tree_map(lambda x: x.shape, params)


def synthetic_spec(batch=16, h=8, w=8, c=1) -> DataSpec:
    def make():
        raise AssertionError("a synthetic task must not load data")

    return DataSpec(image_batch(batch, h, w, c), make)


def random_image_batch(key, abstract, num_classes=10):
    k1, k2 = jax.random.split(key)
    return {
        "image": jax.random.uniform(k1, abstract["image"].shape),
        "label": jax.random.randint(k2, abstract["label"].shape, 0, num_classes),
    }


# -- models: names, shapes, conventions (no data needed) ------------------------------------
def test_appendix_a_conv_parameters():
    s = shapes(ct.get_task("Conv_Cifar10_32x64x64"))
    assert s == {
        "conv2_d": {"w": (3, 3, 3, 32), "b": (32,)},
        "conv2_d_1": {"w": (3, 3, 32, 64), "b": (64,)},
        "conv2_d_2": {"w": (3, 3, 64, 64), "b": (64,)},
        "linear": {"w": (64, 10), "b": (10,)},
    }
    assert sum(np.prod(v) for d in s.values() for v in d.values()) == 56_970


def test_appendix_a_layernorm_mlp_parameters():
    task = ct.get_task("ImageMLP_Cifar10_128x128x128_LayerNorm_Relu")
    s = shapes(task)
    assert sorted(s) == [
        "layer_norm",
        "layer_norm_1",
        "layer_norm_2",
        "linear",
        "linear_1",
        "linear_2",
        "linear_3",
    ]
    assert s["linear"]["w"] == (3072, 128) and s["linear_3"]["w"] == (128, 10)
    assert s["layer_norm_2"] == {"scale": (128,), "offset": (128,)}
    params, state = task.init_with_state(KEY)
    assert state == {}
    assert layers.count_params(params) == 428_426


def test_appendix_a_autoencoder_parameters():
    s = shapes(ct.get_task("ImageMLPAE_Mnist_128x32x128_bs128"))
    assert s == {
        "mlp/~/linear_0": {"w": (784, 128), "b": (128,)},
        "mlp/~/linear_1": {"w": (128, 32), "b": (32,)},
        "mlp/~/linear_2": {"w": (32, 128), "b": (128,)},
        "mlp/~/linear_3": {"w": (128, 784), "b": (784,)},
    }
    assert sum(np.prod(v) for d in s.values() for v in d.values()) == 209_968


@pytest.mark.parametrize("name", ct.get_suite("fast_velo"))
def test_fast_velo_mlp_parameters(name):
    s = shapes(ct.get_task(name))
    assert s == {
        "mlp/~/linear_0": {"w": (64, 32), "b": (32,)},
        "mlp/~/linear_1": {"w": (32, 10), "b": (10,)},
    }
    assert ct.get_task(name).abstract_batch["image"].shape == (64, 8, 8, 1)


def test_haiku_initialisation_is_reproduced_bitwise():
    # The golden Fashion-MNIST run initialised haiku's MLP([128,128,10]) from PRNGKey(0).
    golden = np.load(GOLDEN / "fmnist_mlp_curves.npz")
    params = layers.mlp_init(layers.KeySeq(KEY), 784, [128, 128, 10])
    for name, leaf in params.items():
        np.testing.assert_array_equal(leaf["w"], golden[f"init/{name}/w"])
        np.testing.assert_array_equal(leaf["b"], golden[f"init/{name}/b"])


def test_stride2_conv_uses_xla_same_padding():
    x = jax.random.normal(KEY, (2, 32, 32, 3))
    p = layers.conv2d_init(layers.KeySeq(jax.random.PRNGKey(1)), 3, 4)
    out = layers.conv2d(p, x, stride=2)
    assert out.shape == (2, 16, 16, 4)

    def explicit(pad):
        y = jax.lax.conv_general_dilated(
            x, p["w"], (2, 2), [pad, pad], dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y + p["b"]

    np.testing.assert_allclose(out, explicit((0, 1)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, explicit((1, 1)), atol=1e-3)
    assert layers.conv2d(p, x, stride=1).shape == (2, 32, 32, 4)


def test_layer_norm_uses_exact_variance_and_eps():
    x = np.asarray(jax.random.normal(KEY, (4, 128)), np.float64) * 3 + 1
    p = {"scale": jnp.linspace(0.5, 2.0, 128), "offset": jnp.linspace(-1, 1, 128)}
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    want = np.asarray(p["scale"]) * (x - mu) / np.sqrt(var + 1e-5) + np.asarray(p["offset"])
    got = layers.layer_norm(p, jnp.asarray(x, jnp.float32), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_autoencoder_loss_is_mse_of_sigmoid_reconstruction():
    task = ct.get_task("ImageMLPAE_Mnist_128x32x128_bs128")
    params = task.init(KEY)
    batch = random_image_batch(KEY, task.abstract_batch)
    x = np.asarray(batch["image"]).reshape(128, -1)
    logits = layers.mlp(params, jnp.asarray(x), 4)
    want = np.mean(np.mean((x - jax.nn.sigmoid(logits)) ** 2, axis=1))
    np.testing.assert_allclose(task.loss(params, KEY, batch), want, rtol=1e-5)
    assert float(task.normalizer(jnp.asarray(3.0))) == 1.0


def test_classification_normalizer_clips_and_maps_non_finite_to_cap():
    task = ct.get_task("Conv_Cifar10_32x64x64")
    cap = 1.5 * np.log(10)
    got = task.normalizer(jnp.asarray([-1.0, 1.0, 10.0, jnp.nan, jnp.inf, -jnp.inf]))
    np.testing.assert_allclose(got, [0.0, 1.0, cap, cap, cap, cap], rtol=1e-6)
    cap100 = 1.5 * np.log(100)
    assert float(
        ct.get_task("Conv_Cifar100_32x64x64").normalizer(jnp.asarray(jnp.nan))
    ) == pytest.approx(cap100)


def test_batchnorm_task_carries_moving_averages():
    task = _MLPImageTaskNorm(synthetic_spec(), [16, 16], "batch_norm", num_classes=10)
    params, state = task.init_with_state(KEY)
    assert params["batch_norm"]["scale"].shape == (1, 16)
    assert int(state["batch_norm/~/mean_ema"]["counter"]) == 1  # haiku's init runs the model once
    batch = random_image_batch(KEY, task.abstract_batch)
    loss, new_state = task.loss_with_state(params, state, KEY, batch)
    assert int(new_state["batch_norm_1/~/var_ema"]["counter"]) == 2
    # Training mode normalises with batch statistics, so the state never changes the loss.
    np.testing.assert_allclose(task.loss(params, KEY, batch), loss, rtol=1e-6)
    # Zero-debiased EMA: one update from fresh state gives the batch mean itself.
    _, fresh = task.loss_with_state(params, None, KEY, batch)
    x = np.asarray(batch["image"]).reshape(16, -1) @ params["linear"]["w"] + params["linear"]["b"]
    ema = fresh["batch_norm/~/mean_ema"]
    np.testing.assert_allclose(ema["average"], x.mean(0, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ema["hidden"], 0.1 * x.mean(0, keepdims=True), rtol=1e-5, atol=1e-7)
    conv = ct.get_task("Conv_Cifar10_32x64x64_batchnorm")
    conv_params, conv_state = jax.eval_shape(conv.init_with_state, KEY)
    assert conv_params["batch_norm_2"]["scale"].shape == (1, 1, 1, 64)
    assert sorted(conv_state)[:2] == ["batch_norm/~/mean_ema", "batch_norm/~/var_ema"]


def test_transformer_is_causal_and_shapes_match_reference():
    task = ct.get_task("TransformerLM_LM1B_MultiRuntime_2")  # no dropout
    s = shapes(task)
    assert s["transformer/embed"]["embeddings"] == (32100, 32)
    assert s["transformer/h1_attn/query"]["w"] == (32, 4 * 32)  # 32-wide heads
    assert s["transformer/h0_attn/linear"]["w"] == (128, 32)
    assert s["transformer/h0_mlp/linear_1"]["w"] == (128, 32)
    assert s["transformer/linear"]["w"] == (32, 32100)
    params = task.init(KEY)
    obs = jax.random.randint(KEY, (2, 8), 1, 32000)
    changed = obs.at[:, 5].set(7)
    logits = jax.jit(task.logits)
    a, b = logits(params, KEY, obs), logits(params, KEY, changed)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_rnn_lm_parameters_follow_haiku_layout():
    s = shapes(ct.get_task("RNNLM_lm1b32k_Patch32_LSTM256_Embed128"))
    assert s == {
        "embed": {"embeddings": (32100, 128)},
        "~": {"initial_state_0": (1, 256), "initial_state_1": (1, 256)},
        "lstm/linear": {"w": (128 + 256, 1024), "b": (1024,)},
        "linear": {"w": (256, 32100), "b": (32100,)},
    }


def test_vit_encoder_block_matches_flax():
    nn = pytest.importorskip("flax.linen")
    from celo.tasks.vit import ViTConfig, encoder_block, encoder_block_init

    cfg = ViTConfig(hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1)

    p = encoder_block_init(KEY, cfg)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 5, cfg.hidden_size))

    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, y):
            y = nn.gelu(nn.Dense(cfg.mlp_dim)(y))
            return nn.Dense(cfg.hidden_size)(y)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, inputs):
            y = nn.LayerNorm()(inputs)
            y = nn.MultiHeadDotProductAttention(num_heads=cfg.num_heads)(y, y)
            y = y + inputs
            return y + Mlp(name="MlpBlock_0")(nn.LayerNorm()(y))

    want = Block().apply({"params": p}, x)
    np.testing.assert_allclose(encoder_block(p, x), want, rtol=2e-5, atol=2e-5)


def test_vit_shapes_and_normalizer():
    s = shapes(ct.get_task("VIT_Cifar100_wideshallow"))["params"]
    assert s["embedding"]["kernel"] == (16, 16, 3, 384)
    assert s["Transformer"]["posembed_input"]["pos_embedding"] == (1, 5, 384)
    assert s["Transformer"]["encoderblock_5"]["MlpBlock_0"]["Dense_0"]["kernel"] == (384, 1536)
    assert s["head"]["kernel"] == (384, 100)
    task = ct.get_task("VIT_Cifar100_skinnydeep")
    got = task.normalizer(jnp.asarray([np.log(200) / 2, jnp.nan, 100.0]))
    np.testing.assert_allclose(got, [5.0, 10.0, 10.0], rtol=1e-6)


# -- jit / vmap / scan safety (meta-training's usage) -----------------------------------------
def _vmapped_unrolls(family, cfgs, keys):
    def one(cfg, key):
        t = family.task_fn(cfg)
        params, state = t.init_with_state(key)

        def step(carry, key):
            params, state = carry
            batch = random_image_batch(key, t.abstract_batch)
            (loss, state), g = jax.value_and_grad(t.loss_with_state, has_aux=True)(
                params, state, key, batch
            )
            params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, g)
            return (params, state), t.normalizer(loss)

        return jax.lax.scan(step, (params, state), jax.random.split(key, 4))[1]

    return jax.vmap(one)(cfgs, keys)


@pytest.mark.parametrize("norm", [None, "batch_norm"])
def test_families_vmap_init_and_scan_losses(norm):
    if norm:
        task = _MLPImageTaskNorm(synthetic_spec(), [8], norm, num_classes=10)
    else:
        task = _MLPImageTask(synthetic_spec(), [8], num_classes=10)
    family = ct.single_task_to_family(task, name="synthetic")
    keys = jax.random.split(KEY, 3)
    cfgs = jax.vmap(family.sample)(keys)
    losses = jax.jit(functools.partial(_vmapped_unrolls, family))(cfgs, keys)
    assert losses.shape == (3, 4) and bool(jnp.all(jnp.isfinite(losses)))


# -- registry and suites ----------------------------------------------------------------------
def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ct.UnknownTaskError, match="Conv_Cifar10_32x64x64"):
        ct.get_task("Conv_Cifar10_32x64x65")
    with pytest.raises(ct.UnknownTaskError, match="velodrome17_small"):
        ct.get_suite("velodrome18")
    with pytest.raises(ct.UnknownTaskError, match="fmnist\\+cifar10"):
        ct.get_task_family("mnist+cifar10")
    with pytest.raises(ValueError, match="ImageMLP_FashionMnist_Relu128x128"):
        ct.get_horizon("nope", "velodrome17")


def test_suites():
    v17 = ct.get_suite("velodrome17")
    assert len(v17) == len(set(v17)) == 17
    assert ct.get_suite("velodrome17_small") == v17
    assert all(name in ct.task_names() for name in v17 + ct.get_suite("fast_velo"))
    entries = {t.name: t for t in ct.get_suite_tasks("velodrome17")}
    assert entries["ImageMLPAE_Cifar10_128x32x128_bs256"].batch_size == 256
    assert entries["TransformerLM_LM1B_MultiRuntime_0"].batch_size == 4
    for t in entries.values():
        assert t.cost in ("tiny", "small", "medium", "large")
        assert ct.get_horizon(t.name, "velodrome17_small") < ct.get_horizon(t.name) == t.horizon
    for name in v17:  # the declared batch size is the task's
        lead = next(iter(ct.get_task(name).abstract_batch.values())).shape
        lopt = name.startswith("LOpt_")  # its batch stacks 50 inner batches
        assert lead[1 if lopt else 0] == entries[name].batch_size


def test_task_families_by_reference_names():
    fast = ct.get_task_family("fast_velo")
    assert isinstance(fast, list) and len(fast) == 4
    assert len({f.name for f in fast}) == 4  # unique metric keys, unlike the reference
    assert [f.name for f in ct.get_task_family("fmnist+cifar10")] == [
        "ImageMLP_FashionMnist_Relu128x128",
        "Conv_Cifar10_32x64x64",
    ]
    assert len(ct.get_task_family("fmnist")) == 1
    single = ct.get_task_family("Conv_Cifar10_32x64x64")
    assert isinstance(single, ct.TaskFamily)
    cfg = single.sample(KEY)
    assert int(cfg) == 0 and single.task_fn(cfg).name == "Conv_Cifar10_32x64x64"
    assert single.eval_task_fn(cfg) is single.task_fn(cfg)


# -- real data ----------------------------------------------------------------------------------
def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def _loss_and_grad(task, batch):
    params, state = task.init_with_state(KEY)
    fn = jax.jit(jax.value_and_grad(task.loss_with_state, has_aux=True))
    (loss, _), grad = fn(params, state, KEY, batch)
    return loss, grad


# Compile or step time above ~10 s on two CPU cores: full checks run with -m slow,
# and a cheaper real-data check (below) runs by default.
HEAVY = {
    "VIT_Cifar100_wideshallow",
    "VIT_Cifar100_skinnydeep",
    "RNNLM_lm1b32k_Patch32_LSTM256_Embed128",
    "RNNLM_wikipediaen32k_Patch32_LSTM256_Embed128",
    "LOpt_AdafacMLPLOpt_FashionMnist_50",
}
SMOKE = [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
    for n in ct.get_suite("velodrome17_small") + ct.get_suite("fast_velo")
]


@pytest.mark.parametrize("name", SMOKE)
def test_task_loss_and_gradient_are_finite_on_real_data(name, data_dir):
    task = ct.get_task(name, data_dir=data_dir)
    batch = next(task.datasets.train)
    expected = {k: (v.shape, v.dtype) for k, v in task.abstract_batch.items()}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    loss, grad = _loss_and_grad(task, batch)
    assert np.isfinite(float(loss)) and _finite(grad)
    assert np.isfinite(float(task.normalizer(loss)))


# One ViT is enough by default: the two differ only in width and depth.
@pytest.mark.parametrize(
    "name", sorted(HEAVY - {"LOpt_AdafacMLPLOpt_FashionMnist_50", "VIT_Cifar100_skinnydeep"})
)
def test_heavy_tasks_on_a_slice_of_real_data(name, data_dir):
    task = ct.get_task(name, data_dir=data_dir)
    batch = {k: v[:4] for k, v in next(task.datasets.train).items()}
    loss, grad = _loss_and_grad(task, batch)
    assert np.isfinite(float(loss)) and _finite(grad)


def test_lopt_task_loss_on_real_data(data_dir):
    task = ct.get_task("LOpt_AdafacMLPLOpt_FashionMnist_50", data_dir=data_dir)
    batch = next(task.datasets.train)
    assert batch["image"].shape == (50, 128, 8, 8, 1)
    theta = task.init(KEY)
    loss = jax.jit(task.loss)(theta, KEY, batch)
    # The mean normalised loss of a 50-step unroll from a fresh MLP: near ln 10.
    assert 1.0 < float(loss) < 1.5 * np.log(10)


@pytest.mark.parametrize("name", ct.get_suite("fast_velo"))
def test_ten_adam_steps_reduce_fast_velo_training_loss(name, data_dir):
    task = ct.get_task(name, data_dir=data_dir)
    it = task.datasets.train
    batches = [next(it) for _ in range(10)]
    probe = {k: np.concatenate([b[k] for b in batches[:4]]) for k in batches[0]}
    opt = optax.adam(1e-2)

    @jax.jit
    def train(params):
        def step(carry, batch):
            params, opt_state = carry
            grad = jax.grad(task.loss)(params, KEY, batch)
            updates, opt_state = opt.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        stacked = {k: jnp.stack([b[k] for b in batches]) for k in batches[0]}
        return jax.lax.scan(step, (params, opt.init(params)), stacked)[0][0]

    params = task.init(KEY)
    before = float(task.loss(params, KEY, probe))
    after = float(task.loss(train(params), KEY, probe))
    assert after < before - 0.05, (before, after)


def test_fashion_mnist_mlp_matches_golden_adam_curve(data_dir):
    """The reference's ImageMLP_FashionMnist_Relu128x128 loss, stepped by optax.adam(1e-3)."""
    from celo.data import formats

    golden = np.load(GOLDEN / "fmnist_mlp_curves.npz")
    folder = data_dir / "fashion_mnist"
    images = formats.read_idx(formats.find_idx(folder, "train-images-idx3-ubyte"))
    labels = formats.read_idx(formats.find_idx(folder, "train-labels-idx1-ubyte")).astype(np.int32)
    task = ct.get_task("ImageMLP_FashionMnist_Relu128x128", data_dir=data_dir)
    params = {
        f"mlp/~/linear_{i}": {
            "w": golden[f"init/mlp/~/linear_{i}/w"],
            "b": golden[f"init/mlp/~/linear_{i}/b"],
        }
        for i in range(3)
    }
    perm, steps = golden["perm"], 20
    idx = perm[np.arange(steps * 128) % len(perm)].reshape(steps, 128)
    stacked = {"image": images[idx][..., None].astype(np.float32) / 255.0, "label": labels[idx]}
    opt = optax.adam(1e-3)

    @functools.partial(jax.jit)
    def run(params):
        def step(carry, batch):
            params, opt_state = carry
            loss, grad = jax.value_and_grad(task.loss)(params, KEY, batch)
            updates, opt_state = opt.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, (params, opt.init(params)), stacked)[1]

    np.testing.assert_allclose(run(params), golden["adam/train_loss"][:steps], rtol=2e-5)
