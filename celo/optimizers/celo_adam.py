"""Celo-Adam: Celo's learned LSTM scheduler driving a bias-corrected Adam step (spec §5).

``step = m̂ · (lr_mult·1e-3) / (1e-8 + sqrt(v̂ + 1e-10))`` with
``lr_mult = 0.1·exp(s)`` from the same scheduler network as Celo (no
``rnn_to_controls`` head). The reference also updates Adafactor statistics that
it never reads; they are skipped here unless ``track_factored_stats=True``,
which only matters to code that inspects the optimizer state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from celo.lopt import (
    LSTMState,
    MomAccumulator,
    RmsAccumulator,
    factored_init,
    factored_update,
    loss_buffer_init,
    lstm_initial_state,
    rolling_mom_init,
    rolling_mom_update,
    rolling_rms_init,
    rolling_rms_update,
)
from celo.optimizers.base import LearnedOptimizer
from celo.optimizers.celo import (
    SCHEDULER_INPUTS,
    init_scheduler,
    scheduler_step,
    tile_lstm_state,
)


@flax.struct.dataclass
class CeloAdamState:
    params: Any
    state: Any
    mom_rolling: MomAccumulator
    rms_rolling: RmsAccumulator
    fac_rolling: Any
    iteration: jnp.ndarray
    num_steps: jnp.ndarray
    lstm_hidden_state: LSTMState
    loss_buffer: dict


@dataclasses.dataclass(frozen=True)
class CeloAdam(LearnedOptimizer):
    """Learned scheduler × Adam. Defaults are the reference factory's ``celo_adam``."""

    lstm_hidden_size: int = 64
    initial_momentum_decays: tuple = (0.9,)
    initial_rms_decays: tuple = (0.999,)
    initial_adafactor_decays: tuple = (0.9, 0.99, 0.999)
    initial_epsilon: float = 1e-8
    step_mult: float = 1e-3
    bias_correction: bool = True
    track_factored_stats: bool = False

    needs_num_steps = True
    needs_loss = True

    @property
    def name(self) -> str:
        return "celo_adam"

    def init(self, key):
        key1, key = jax.random.split(key)
        key1, key = jax.random.split(key)
        return {
            "lstm_init_state": lstm_initial_state(self.lstm_hidden_size),
            "rnn_params": init_scheduler(key1, SCHEDULER_INPUTS, self.lstm_hidden_size, 0),
        }

    def init_state(self, theta, params, model_state, num_steps, key):
        del key
        n_leaves = len(jax.tree_util.tree_leaves(params))
        fac = (
            factored_init(params, self.initial_adafactor_decays)
            if self.track_factored_stats
            else ()
        )
        return CeloAdamState(
            params=params,
            state=model_state,
            mom_rolling=rolling_mom_init(params, self.initial_momentum_decays),
            rms_rolling=rolling_rms_init(params, self.initial_rms_decays),
            fac_rolling=fac,
            iteration=jnp.asarray(0, jnp.int32),
            num_steps=jnp.asarray(num_steps, jnp.int32),
            lstm_hidden_state=tile_lstm_state(theta["lstm_init_state"], n_leaves),
            loss_buffer=loss_buffer_init(num_steps),
        )

    def scheduler_step(self, theta, state, loss):
        """Identical to Celo's scheduler half (there is no controls head)."""
        return scheduler_step(theta, state, loss)

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del is_valid, key
        loss_buffer, _, lr_mult, lstm_state = self.scheduler_step(theta, state, loss)
        grad = jax.tree_util.tree_map(lambda g: jnp.clip(g, -1000.0, 1000.0), grad)
        mom = rolling_mom_update(state.mom_rolling, grad, self.initial_momentum_decays)
        rms = rolling_rms_update(state.rms_rolling, grad, self.initial_rms_decays)
        fac = state.fac_rolling
        if self.track_factored_stats:
            fac, _ = factored_update(fac, grad, self.initial_adafactor_decays)

        t = state.iteration + 1
        b1 = self.initial_momentum_decays[0]
        b2 = self.initial_rms_decays[0]
        eps = self.initial_epsilon
        treedef = jax.tree_util.tree_structure(state.params)
        flat = [treedef.flatten_up_to(x) for x in (state.params, mom.m, rms.rms)]
        new_leaves = []
        for i, (p, m, v) in enumerate(zip(*flat)):
            lr = lr_mult[i] * self.step_mult
            if self.bias_correction:
                m = m / (1 - b1**t)
                v = v / (1 - b2**t)
            step = (m * (lr * 1.0 / (eps + jax.lax.sqrt(v + 1e-10))))[..., -1]
            new_leaves.append(p - step)
        return CeloAdamState(
            params=jax.tree_util.tree_unflatten(treedef, new_leaves),
            state=model_state,
            mom_rolling=mom,
            rms_rolling=rms,
            fac_rolling=fac,
            iteration=t,
            num_steps=state.num_steps,
            lstm_hidden_state=lstm_state,
            loss_buffer=loss_buffer,
        )


def celo_adam(**kwargs) -> CeloAdam:
    """Released Celo-Adam configuration."""
    return CeloAdam(**kwargs)
