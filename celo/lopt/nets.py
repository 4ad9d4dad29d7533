"""Haiku-compatible linear layers and LSTM, as pure functions over param dicts.

Parameter layouts follow haiku exactly (spec §3.8) so that the released
checkpoints load: a linear module is ``{"w": (in, out), "b": (out,)}`` and an
LSTM named ``rnn`` owns one linear module ``"rnn/linear"`` applied to
``concat[x, h]`` with gates in the order i, g, f, o.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LSTMState(NamedTuple):
    """haiku's LSTMState; serialises as ``{hidden, cell}`` in field order."""

    hidden: jnp.ndarray
    cell: jnp.ndarray


def truncated_normal(key, shape, stddev: float, dtype=jnp.float32) -> jnp.ndarray:
    """haiku's TruncatedNormal: a standard normal cut at ±2, times ``stddev``."""
    unscaled = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
    return unscaled * jnp.asarray(stddev, dtype)


def linear_init(key, n_in: int, n_out: int, stddev: float | None = None) -> dict:
    """``hk.Linear`` initialisation: w ~ TruncatedNormal(1/√fan_in), b = 0."""
    std = 1.0 / np.sqrt(n_in) if stddev is None else stddev
    return {
        "b": jnp.zeros((n_out,), jnp.float32),
        "w": truncated_normal(key, (n_in, n_out), std),
    }


def linear_apply(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    return x @ params["w"] + params["b"]


def lstm_initial_state(hidden_size: int, batch: int = 1) -> LSTMState:
    zeros = jnp.zeros((batch, hidden_size), jnp.float32)
    return LSTMState(hidden=zeros, cell=zeros)


def lstm_init(key, n_in: int, hidden_size: int) -> dict:
    """Params of ``hk.LSTM``'s single linear: w (in + H, 4H), b (4H,)."""
    return linear_init(key, n_in + hidden_size, 4 * hidden_size)


def lstm_apply(params: dict, x: jnp.ndarray, state: LSTMState) -> tuple[jnp.ndarray, LSTMState]:
    """One LSTM step; gate split order i, g, f, o and forget-gate bias +1."""
    gated = linear_apply(params, jnp.concatenate([x, state.hidden], axis=-1))
    i, g, f, o = jnp.split(gated, 4, axis=-1)
    f = jax.nn.sigmoid(f + 1)
    cell = f * state.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
    return hidden, LSTMState(hidden=hidden, cell=cell)
