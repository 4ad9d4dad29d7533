"""Loss-trend features: ten EMAs of the training loss turned into 9 features (§3.6).

The state is a plain dict with the reference keys (``means``, ``iteration``,
``running_min``, ``decays``) so that optimizer states line up with the
reference's key paths.
"""

from __future__ import annotations

import jax.numpy as jnp

_NUM_DECAYS = 10


def loss_buffer_init(num_steps) -> dict:
    """Half-lives log-spaced from 10 to ``num_steps``; ``num_steps`` may be traced."""
    halflife = jnp.logspace(1, jnp.log10(num_steps), _NUM_DECAYS)
    decays = jnp.exp(-1.0 / halflife).astype(jnp.float32)
    return {
        "decays": decays,
        "iteration": jnp.asarray(0, dtype=jnp.int32),
        "means": jnp.zeros((_NUM_DECAYS,), dtype=jnp.float32),
        "running_min": 999999999999.0 * jnp.ones((_NUM_DECAYS,), dtype=jnp.float32),
    }


def loss_buffer_update(state: dict, loss) -> dict:
    """Push one loss value, clipped to twice the largest bias-corrected mean."""
    decays = state["decays"]
    it = state["iteration"]
    cor_mean = state["means"] / (1 - decays ** (it + 1))
    approx_max = jnp.where(it == 0, loss, jnp.max(cor_mean))
    loss = jnp.minimum(jnp.abs(approx_max) * 2, loss)
    means = state["means"] * decays + loss * (1.0 - decays)
    cor_mean = means / (1 - decays ** (it + 1))
    return {
        "decays": decays,
        "iteration": it + 1,
        "means": means,
        "running_min": jnp.minimum(state["running_min"], cor_mean),
    }


def loss_buffer_features(state: dict) -> jnp.ndarray:
    """Nine features in [−1, 1]; all zero on the first two updates."""
    decays = state["decays"]
    cor_mean = state["means"] / (1 - decays ** state["iteration"])
    approx_max = cor_mean[1:]
    cor_mean = cor_mean[:-1]
    running_min = state["running_min"][:-1]
    den = jnp.maximum(1e-8, approx_max - running_min)
    feature = jnp.clip((cor_mean - running_min) / den - 1.0, -1, 1)
    return jnp.where(state["iteration"] <= 2, feature * 0, feature)
