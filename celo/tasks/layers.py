"""haiku-compatible layers as pure functions over parameter dicts.

The task models keep haiku's parameter names, shapes and initialisers (spec
§3.8, Appendix A) without depending on haiku: a module is a dict entry such as
``"mlp/~/linear_0": {"w", "b"}`` or ``"conv2_d_1": {"w", "b"}``.

Random keys are drawn with :class:`KeySeq`, which reproduces haiku's default
``PRNGSequence`` (each draw is ``key, sub = split(key)``). Consuming keys in
haiku's module-creation order therefore gives bitwise the parameters haiku
would create from the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from celo.lopt.nets import truncated_normal

# scipy.stats.truncnorm.std(a=-2, b=2): haiku's VarianceScaling divides by it.
_TRUNC_STD = 0.87962566103423978


class KeySeq:
    """haiku's PRNGSequence: every draw splits the running key in two."""

    def __init__(self, key: jax.Array):
        self._key = key

    def __next__(self) -> jax.Array:
        self._key, sub = jax.random.split(self._key)
        return sub

    next = __next__


# -- initialisers -------------------------------------------------------------------
def fan_in_std(fan_in: int) -> float:
    """haiku's default Linear/Conv stddev, 1/√fan_in."""
    return float(1.0 / np.sqrt(fan_in))


def variance_scaling_std(scale: float, fan_in: int) -> float:
    """haiku ``VarianceScaling(scale)`` (fan_in, truncated normal) as a stddev."""
    return float(np.sqrt(scale / max(1.0, fan_in)) / _TRUNC_STD)


def linear_init(keys: KeySeq, n_in: int, n_out: int, stddev: float | None = None) -> dict:
    """``hk.Linear``: w ~ TruncatedNormal(stddev, default 1/√n_in), b = 0."""
    std = fan_in_std(n_in) if stddev is None else stddev
    return {"w": truncated_normal(next(keys), (n_in, n_out), std), "b": jnp.zeros((n_out,))}


def linear(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """``x @ w + b``."""
    return jnp.dot(x, params["w"]) + params["b"]


# -- MLP ----------------------------------------------------------------------------------
def mlp_init(keys: KeySeq, n_in: int, sizes: Sequence[int], name: str = "mlp") -> dict:
    """``hk.nets.MLP(sizes)``: layers ``{name}/~/linear_{i}``."""
    params = {}
    for i, n_out in enumerate(sizes):
        params[f"{name}/~/linear_{i}"] = linear_init(keys, n_in, n_out)
        n_in = n_out
    return params


def mlp(
    params: dict,
    x: jnp.ndarray,
    num_layers: int,
    activation: Callable[[jnp.ndarray], jnp.ndarray] = jax.nn.relu,
    name: str = "mlp",
) -> jnp.ndarray:
    """Apply an ``hk.nets.MLP``: activation between layers, none after the last."""
    for i in range(num_layers):
        x = linear(params[f"{name}/~/linear_{i}"], x)
        if i < num_layers - 1:
            x = activation(x)
    return x


# -- convolution ----------------------------------------------------------------------
def conv2d_init(keys: KeySeq, c_in: int, c_out: int, kernel: int = 3) -> dict:
    """``hk.Conv2D``: HWIO kernel with stddev 1/√(k·k·c_in), zero bias."""
    shape = (kernel, kernel, c_in, c_out)
    w = truncated_normal(next(keys), shape, fan_in_std(kernel * kernel * c_in))
    return {"w": w, "b": jnp.zeros((c_out,))}


def conv2d(params: dict, x: jnp.ndarray, stride: int = 1) -> jnp.ndarray:
    """NHWC convolution with XLA "SAME" padding (pads 0/1 for stride 2 on even sizes)."""
    out = jax.lax.conv_general_dilated(
        x,
        params["w"],
        window_strides=(stride, stride),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return out + params["b"]


# -- normalisation ------------------------------------------------------------------
def layer_norm_init(size: int) -> dict:
    """``hk.LayerNorm`` params over the last axis: scale 1, offset 0."""
    return {"scale": jnp.ones((size,)), "offset": jnp.zeros((size,))}


def layer_norm(params: dict, x: jnp.ndarray, axis: int = -1, eps: float = 1e-5) -> jnp.ndarray:
    """``hk.LayerNorm``: exact variance mean((x−μ)²), ``scale·(x−μ)·rsqrt(var+eps)+offset``."""
    mean = jnp.mean(x, axis=axis, keepdims=True)
    var = jnp.var(x, axis=axis, keepdims=True)
    inv = params["scale"] * jax.lax.rsqrt(var + eps)
    return inv * (x - mean) + params["offset"]


def batch_norm_init(shape: Sequence[int]) -> tuple[dict, dict]:
    """``hk.BatchNorm`` params (scale, offset) and EMA state for a stats shape."""
    shape = tuple(shape)
    params = {"scale": jnp.ones(shape), "offset": jnp.zeros(shape)}
    ema = {
        "counter": jnp.zeros((), jnp.int32),
        "hidden": jnp.zeros(shape),
        "average": jnp.zeros(shape),
    }
    return params, {"mean_ema": ema, "var_ema": dict(ema)}


def _ema_update(ema: dict, value: jnp.ndarray, decay: float) -> dict:
    # hk.ExponentialMovingAverage with zero_debias=True and no warmup.
    counter = ema["counter"] + 1
    decay = jnp.asarray(decay, value.dtype)
    hidden = ema["hidden"] * decay + value * (1 - decay)
    average = hidden / (1 - jnp.power(decay, counter.astype(value.dtype)))
    return {"counter": counter, "hidden": hidden, "average": average}


def batch_norm_train(
    params: dict, state: dict, x: jnp.ndarray, decay: float = 0.9, eps: float = 1e-5
) -> tuple[jnp.ndarray, dict]:
    """``hk.BatchNorm(...)(x, is_training=True)`` over all axes but the last.

    Normalises with the batch statistics (haiku's fast variance
    ``E[x²] − E[x]²``) and advances the moving averages, which training-mode
    outputs never read.
    """
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x), axes, keepdims=True) - jnp.square(mean)
    new_state = {
        "mean_ema": _ema_update(state["mean_ema"], mean, decay),
        "var_ema": _ema_update(state["var_ema"], var, decay),
    }
    inv = params["scale"] * jax.lax.rsqrt(var + eps)
    return (x - mean) * inv + params["offset"], new_state


# -- embeddings and dropout ------------------------------------------------------------------
def embed_init(keys: KeySeq, vocab_size: int, dim: int) -> dict:
    """``hk.Embed``: embeddings ~ TruncatedNormal(1)."""
    return {"embeddings": truncated_normal(next(keys), (vocab_size, dim), 1.0)}


def embed(params: dict, ids: jnp.ndarray) -> jnp.ndarray:
    """Look up the rows of ``ids``."""
    return jnp.asarray(params["embeddings"])[(ids,)]


def dropout(key: jax.Array, rate: float, x: jnp.ndarray) -> jnp.ndarray:
    """``hk.dropout``; ``rate`` is static, and 0 returns ``x`` unchanged."""
    if rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, 0.0)


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(np.shape(p)) for p in jax.tree_util.tree_leaves(params)))


def batch_norm_ema(state: dict | None, name: str, shape: Sequence[int]) -> dict:
    """The moving averages of BatchNorm ``name`` in a haiku state dict.

    Fresh zeros when the caller has no state (``task.loss(params, key,
    batch)``): training-mode outputs never read the averages, so the loss is
    the same either way.
    """
    if state:
        return {"mean_ema": state[f"{name}/~/mean_ema"], "var_ema": state[f"{name}/~/var_ema"]}
    return batch_norm_init(shape)[1]
