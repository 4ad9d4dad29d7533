"""Vision transformers (learned_optimization ``tasks/fixed/vit.py``).

The reference builds ``vit_jax.models_vit.VisionTransformer`` (flax). This is
the same network in plain JAX with flax's parameter tree (``{"params":
{"embedding", "cls", "Transformer": {"posembed_input", "encoderblock_{i}":
{"LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1",
"MlpBlock_0"}, "encoder_norm"}, "head"}}``) and flax's initialisers: LeCun
normal patch embedding, Xavier-uniform attention and MLP kernels, MLP biases
N(0, 1e-6), positional embeddings N(0, 0.02), zero class token and zero head.
LayerNorms are flax's (ε = 1e-6, variance E[x²] − E[x]²).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from celo.lopt.nets import truncated_normal
from celo.tasks.base import Task, softmax_cross_entropy
from celo.tasks.sources import image_source

_TRUNC_STD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT task (``classifier="token"``, no dropout)."""

    hidden_size: int
    mlp_dim: int
    num_heads: int
    num_layers: int
    patch_size: int = 16


#: ViT-S/16 with fewer layers, and a narrower, deeper variant (the reference's configs).
WIDE_SHALLOW = ViTConfig(hidden_size=384, mlp_dim=1536, num_heads=6, num_layers=6)
SKINNY_DEEP = ViTConfig(hidden_size=128, mlp_dim=512, num_heads=4, num_layers=10)


def _xavier_uniform(key, shape, fan_in: int, fan_out: int) -> jnp.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


def flax_layer_norm(p: dict, x: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    """``flax.linen.LayerNorm`` with its defaults (fast variance, ε = 1e-6)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean))
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _ln_init(size: int) -> dict:
    return {"scale": jnp.ones((size,)), "bias": jnp.zeros((size,))}


def encoder_block_init(key: jax.Array, cfg: ViTConfig) -> dict:
    """Params of one ``Encoder1DBlock`` (flax names)."""
    h, heads, mlp = cfg.hidden_size, cfg.num_heads, cfg.mlp_dim
    hd = h // heads
    k = jax.random.split(key, 6)
    attn = {
        name: {"kernel": _xavier_uniform(kk, (h, heads, hd), h, h), "bias": jnp.zeros((heads, hd))}
        for name, kk in zip(("query", "key", "value"), k[:3], strict=True)
    }
    attn["out"] = {"kernel": _xavier_uniform(k[3], (heads, hd, h), h, h), "bias": jnp.zeros((h,))}
    kb = jax.random.split(k[5], 2)
    kd = jax.random.split(k[4], 2)
    mlp_block = {
        "Dense_0": {
            "kernel": _xavier_uniform(kd[0], (h, mlp), h, mlp),
            "bias": 1e-6 * jax.random.normal(kb[0], (mlp,)),
        },
        "Dense_1": {
            "kernel": _xavier_uniform(kd[1], (mlp, h), mlp, h),
            "bias": 1e-6 * jax.random.normal(kb[1], (h,)),
        },
    }
    return {
        "LayerNorm_0": _ln_init(h),
        "MultiHeadDotProductAttention_0": attn,
        "LayerNorm_1": _ln_init(h),
        "MlpBlock_0": mlp_block,
    }


def encoder_block(p: dict, x: jnp.ndarray) -> jnp.ndarray:
    """Pre-LN self-attention and GELU MLP, each with a residual connection."""
    a = p["MultiHeadDotProductAttention_0"]
    y = flax_layer_norm(p["LayerNorm_0"], x)
    q, k, v = (
        jnp.einsum("btc,cnd->btnd", y, a[n]["kernel"]) + a[n]["bias"]
        for n in ("query", "key", "value")
    )
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    weights = jax.nn.softmax(jnp.einsum("bqnd,bknd->bnqk", q, k), axis=-1)
    o = jnp.einsum("bnqk,bknd->bqnd", weights, v)
    x = x + jnp.einsum("bqnd,ndc->bqc", o, a["out"]["kernel"]) + a["out"]["bias"]
    m = p["MlpBlock_0"]
    y = flax_layer_norm(p["LayerNorm_1"], x)
    y = jax.nn.gelu(y @ m["Dense_0"]["kernel"] + m["Dense_0"]["bias"])
    return x + y @ m["Dense_1"]["kernel"] + m["Dense_1"]["bias"]


class VisionTransformerTask(Task):
    """ViT classifier (patch embedding, class token, encoder, linear head)."""

    def __init__(self, cfg: ViTConfig, datasets, *, num_classes: int, name: str | None = None):
        self.cfg = cfg
        self.datasets = datasets
        self.num_classes = int(num_classes)
        self._name = name

    def _num_tokens(self) -> int:
        _, height, width, _ = self.abstract_batch["image"].shape
        return (height // self.cfg.patch_size) * (width // self.cfg.patch_size) + 1

    def init(self, key: jax.Array) -> dict:
        cfg, c_in = self.cfg, self.abstract_batch["image"].shape[-1]
        ps, h = cfg.patch_size, cfg.hidden_size
        keys = jax.random.split(key, cfg.num_layers + 2)
        fan_in = ps * ps * c_in
        embed_std = np.sqrt(1.0 / fan_in) / _TRUNC_STD  # flax lecun_normal
        transformer = {
            "posembed_input": {
                "pos_embedding": 0.02 * jax.random.normal(keys[1], (1, self._num_tokens(), h))
            },
            "encoder_norm": _ln_init(h),
        }
        for i in range(cfg.num_layers):
            transformer[f"encoderblock_{i}"] = encoder_block_init(keys[2 + i], cfg)
        params = {
            "embedding": {
                "kernel": truncated_normal(keys[0], (ps, ps, c_in, h), embed_std),
                "bias": jnp.zeros((h,)),
            },
            "cls": jnp.zeros((1, 1, h)),
            "Transformer": transformer,
            "head": {
                "kernel": jnp.zeros((h, self.num_classes)),
                "bias": jnp.zeros((self.num_classes,)),
            },
        }
        return {"params": params}

    def logits(self, params: dict, image: jnp.ndarray) -> jnp.ndarray:
        """Class logits from the class token."""
        p, ps = params["params"], self.cfg.patch_size
        x = (
            jax.lax.conv_general_dilated(
                image,
                p["embedding"]["kernel"],
                (ps, ps),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            + p["embedding"]["bias"]
        )
        n, gh, gw, c = x.shape
        x = jnp.reshape(x, (n, gh * gw, c))
        x = jnp.concatenate([jnp.tile(p["cls"], (n, 1, 1)), x], axis=1)
        t = p["Transformer"]
        x = x + t["posembed_input"]["pos_embedding"]
        for i in range(self.cfg.num_layers):
            x = encoder_block(t[f"encoderblock_{i}"], x)
        x = flax_layer_norm(t["encoder_norm"], x)[:, 0]
        return x @ p["head"]["kernel"] + p["head"]["bias"]

    def loss(self, params: dict, key: jax.Array, data: dict) -> jnp.ndarray:
        del key  # dropout rates are 0
        logits = self.logits(params, data["image"])
        labels = jax.nn.one_hot(data["label"], logits.shape[1])
        return jnp.mean(softmax_cross_entropy(logits=logits, labels=labels))

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        """``10·loss/ln(2C)`` clipped to [0, 10]; non-finite → 10."""
        max_class = float(np.log(2 * self.num_classes))
        loss = jnp.nan_to_num(loss, nan=max_class, neginf=max_class, posinf=max_class)
        return jnp.clip(10 * (loss / max_class), 0, 10)


def _factory(name: str, cfg: ViTConfig):
    def factory(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
        # CIFAR-100 is not available offline: CIFAR-10 subset images, 100-way head.
        data = image_source("cifar10", 128, data_dir=data_dir, seed=seed)
        return VisionTransformerTask(cfg, data, num_classes=100, name=name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"ViT patch {cfg.patch_size}, hidden {cfg.hidden_size}, MLP {cfg.mlp_dim}, "
        f"{cfg.num_heads} heads, {cfg.num_layers} layers, 100 classes; batch 128."
    )
    return factory


VIT_Cifar100_wideshallow = _factory("VIT_Cifar100_wideshallow", WIDE_SHALLOW)
VIT_Cifar100_skinnydeep = _factory("VIT_Cifar100_skinnydeep", SKINNY_DEEP)

FACTORIES = {f.__name__: f for f in (VIT_Cifar100_wideshallow, VIT_Cifar100_skinnydeep)}
