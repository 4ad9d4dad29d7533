"""Feature functions shared by the learned optimizers (spec §3.4, §3.5, §3.7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

PROGRESS_TIMESCALES = (0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)


def second_moment_normalizer(x: jnp.ndarray, axis, eps: float = 1e-5) -> jnp.ndarray:
    """``x * rsqrt(eps + mean(x², axis))``: per-channel scale normalisation."""
    return x * jax.lax.rsqrt(eps + jnp.mean(jnp.square(x), axis=axis, keepdims=True))


def fractional_tanh_embed(fraction_trained: jnp.ndarray) -> jnp.ndarray:
    """Nine ``tanh(10·(x − τ))`` features of the fraction of training done."""
    taus = jnp.asarray(PROGRESS_TIMESCALES, dtype=jnp.float32)
    return jnp.tanh((fraction_trained - taus) * 10)


def clip_log_abs(x: jnp.ndarray, scale: float = 1.0) -> jnp.ndarray:
    """HyperV2's ``0.5·clip(log(1e-8 + |scale·x|), −5, 5)``."""
    return 0.5 * jnp.clip(jnp.log(1e-8 + jnp.abs(scale * x)), -5.0, 5.0)
