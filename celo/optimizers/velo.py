"""VeLO: the HyperV2 hyper-network learned optimizer (spec §6).

A per-tensor LSTM reads 30 features of each tensor (training progress, loss
trend and statistics of the parameter and its accumulators) and emits, per
tensor, ``param_inits`` raw mixing weights over a bank of per-parameter MLPs
and a raw linear step scale ``lr_mult``. The mixed MLP (Celo's 14-group MLP,
:mod:`celo.lopt.ff_mlp`) then proposes the update

    Δp = lr_mult · d · exp(1e-3·μ) · 1e-3 · RMS(p).

Against Celo (§6.2): the controls are not soft-maxed, ``lr_mult`` is used as is
(no ``0.1·exp``) and always applied, the mixed weights are scaled by
``ff_mult``, and the LSTM sees the *pre-update* accumulators while the MLP sees
the updated ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from celo.lopt import (
    FactoredAccum,
    LSTMState,
    MomAccumulator,
    RmsAccumulator,
    clip_log_abs,
    factored_init,
    factored_update,
    fractional_tanh_embed,
    loss_buffer_features,
    loss_buffer_init,
    loss_buffer_update,
    lstm_initial_state,
    rolling_mom_init,
    rolling_mom_update,
    rolling_rms_init,
    rolling_rms_update,
)
from celo.optimizers.base import LearnedOptimizer
from celo.optimizers.celo import (
    init_ff_mod,
    init_scheduler,
    interpolate_ff,
    mlp_param_step,
    scheduler_forward,
    tile_lstm_state,
)

#: Width of the per-tensor LSTM input (the ``var_rms`` quirk included).
LSTM_INPUTS = 30
#: Width of the one-hot encoding of a tensor's rank.
_RANK_ONE_HOT = 5
#: The horizon the loss buffer is built for under ``use_bugged_loss_features``.
_BUGGED_LOSS_HORIZON = 10


@flax.struct.dataclass
class HyperV2State:
    """Inner state; field names and order follow the reference's ``State``."""

    params: Any
    rms_rolling: RmsAccumulator
    mom_rolling: MomAccumulator
    fac_rolling: FactoredAccum
    iteration: jnp.ndarray
    state: Any
    num_steps: jnp.ndarray
    lstm_hidden_state: LSTMState
    loss_buffer: dict


def lstm_features(p, m, rms, fraction_trained, loss_features) -> jnp.ndarray:
    """The 30 LSTM inputs of one tensor (§6.2), from the *pre-update* ``m`` and ``rms``.

    ``p``, ``m`` and ``rms`` are first divided by the tensor's RMS. The
    features, in sorted key order: ``fraction_left`` (9), ``loss_features``
    (9), ``mean_rms`` (1), ``rank`` (5), ``var_m`` (3 decays) and ``var_rms``
    (3). ``var_rms`` centres ``rms`` on the *momentum* mean, which broadcasts
    it to the 3 momentum decays; the pretrained weights expect that width.
    """
    norm_mult = jax.lax.rsqrt(jnp.maximum(1e-9, jnp.mean(jnp.square(p))))
    m = m * norm_mult
    rms = rms * norm_mult
    axes = tuple(range(p.ndim))
    mean_m = jnp.mean(m, axis=axes, keepdims=True)
    var_m = jnp.mean(jnp.square(m - mean_m), axis=axes)
    mean_rms = jnp.mean(rms, axis=axes, keepdims=True)
    var_rms = jnp.mean(jnp.square(rms - mean_m), axis=axes)
    # The rank counts only axes longer than 1; rank ≥ 5 gives all zeros.
    rank = jax.nn.one_hot(sum(int(d > 1) for d in p.shape), _RANK_ONE_HOT, dtype=jnp.float32)
    return jnp.concatenate(
        [
            fractional_tanh_embed(fraction_trained),
            loss_features,
            clip_log_abs(jnp.reshape(mean_rms, (-1,)), scale=10.0),
            rank,
            clip_log_abs(var_m, scale=10.0),
            clip_log_abs(var_rms, scale=10.0),
        ],
        axis=0,
    )


@dataclasses.dataclass(frozen=True)
class HyperV2(LearnedOptimizer):
    """VeLO's hyper-network optimizer; defaults are upstream ``hyper_v2.py``'s (§6.1).

    Use the factories :func:`velo`, :func:`velo_s` and :func:`velo_4000` for the
    registered configurations; note that the class default
    ``use_bugged_loss_features=True`` is upstream's, kept for its checkpoints.

    Attributes:
      lstm_hidden_size: width of the per-tensor LSTM and of its mix layers.
      ff_hidden_size, ff_hidden_layers: shape of each per-parameter MLP.
      initial_momentum_decays, initial_rms_decays, initial_adafactor_decays:
        fixed accumulator decays.
      param_inits: number of MLPs in the bank the controls interpolate.
      mix_layers: run the max-pooled mix layers before the LSTM.
      exp_mult, step_mult: output scales of the MLP step.
      ff_mult: multiplies the interpolated MLP weights (upstream hard-codes 100).
      use_bugged_next_lstm_state: never carry the LSTM state forward (old
        upstream checkpoints rely on it).
      use_bugged_loss_features: build the loss buffer for a horizon of 10
        steps instead of ``num_steps``.
    """

    lstm_hidden_size: int = 128
    ff_hidden_size: int = 4
    ff_hidden_layers: int = 2
    initial_momentum_decays: tuple = (0.9, 0.99, 0.999)
    initial_rms_decays: tuple = (0.999,)
    initial_adafactor_decays: tuple = (0.9, 0.99, 0.999)
    param_inits: int = 64
    mix_layers: bool = True
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    ff_mult: float = 1.0
    use_bugged_next_lstm_state: bool = False
    use_bugged_loss_features: bool = True

    needs_num_steps = True
    needs_loss = True

    @property
    def name(self) -> str:
        config = (self.lstm_hidden_size, self.param_inits, float(self.ff_mult))
        return _FACTORY_NAMES.get(config, "hyper_v2")

    def init(self, key):
        key1, key = jax.random.split(key)
        ff_keys = jax.random.split(key1, self.param_inits)
        ff_mod_stack = jax.vmap(
            lambda k: init_ff_mod(k, self.ff_hidden_size, self.ff_hidden_layers)
        )(ff_keys)
        key1, key = jax.random.split(key)
        # Top-level keys in the reference's insertion order (as its init writes them).
        return {
            "lstm_init_state": lstm_initial_state(self.lstm_hidden_size),
            "rnn_params": init_scheduler(
                key1, LSTM_INPUTS, self.lstm_hidden_size, self.param_inits, self.mix_layers
            ),
            "ff_mod_stack": ff_mod_stack,
        }

    def init_state(self, theta, params, model_state, num_steps, key):
        del key
        horizon = _BUGGED_LOSS_HORIZON if self.use_bugged_loss_features else num_steps
        n_leaves = len(jax.tree_util.tree_leaves(params))
        return HyperV2State(
            params=params,
            state=model_state,
            rms_rolling=rolling_rms_init(params, self.initial_rms_decays),
            mom_rolling=rolling_mom_init(params, self.initial_momentum_decays),
            fac_rolling=factored_init(params, self.initial_adafactor_decays),
            iteration=jnp.asarray(0, jnp.int32),
            num_steps=jnp.asarray(num_steps, jnp.int32),
            lstm_hidden_state=tile_lstm_state(theta["lstm_init_state"], n_leaves),
            loss_buffer=loss_buffer_init(horizon),
        )

    def scheduler_step(self, theta, state: HyperV2State):
        """The per-tensor LSTM half of an update.

        ``state.loss_buffer`` must already hold this step's loss; the
        accumulators are the pre-update ones. Returns ``(controls (T,
        param_inits), lr_mult (T,), lstm_state)``.
        """
        loss_features = loss_buffer_features(state.loss_buffer)
        fraction = state.iteration / jnp.asarray(state.num_steps, dtype=jnp.float32)
        treedef = jax.tree_util.tree_structure(state.params)
        leaves = zip(
            treedef.flatten_up_to(state.params),
            treedef.flatten_up_to(state.mom_rolling.m),
            treedef.flatten_up_to(state.rms_rolling.rms),
            strict=True,
        )
        x = jnp.stack([lstm_features(p, m, v, fraction, loss_features) for p, m, v in leaves])
        controls, lr_mult, _, next_lstm = scheduler_forward(
            theta["rnn_params"], x, state.lstm_hidden_state
        )
        if self.use_bugged_next_lstm_state:
            next_lstm = state.lstm_hidden_state
        return controls, lr_mult, next_lstm

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        # The reference splits ``key`` (PRNGKey(42) when None) into per-tensor
        # keys for an MLP that draws no random numbers, so it cannot change
        # the result and is not used here.
        del is_valid, key
        loss_buffer = loss_buffer_update(state.loss_buffer, loss)
        grad = jax.tree_util.tree_map(lambda g: jnp.clip(g, -1000.0, 1000.0), grad)
        controls, lr_mult, lstm_state = self.scheduler_step(
            theta, state.replace(loss_buffer=loss_buffer)
        )

        mom = rolling_mom_update(state.mom_rolling, grad, self.initial_momentum_decays)
        rms = rolling_rms_update(state.rms_rolling, grad, self.initial_rms_decays)
        fac, fac_g = factored_update(state.fac_rolling, grad, self.initial_adafactor_decays)

        ff = theta["ff_mod_stack"]["~"]
        treedef = jax.tree_util.tree_structure(state.params)
        leaves = [
            treedef.flatten_up_to(t)
            for t in (state.params, grad, mom.m, rms.rms, fac_g, fac.v_col, fac.v_row, fac.v_diag)
        ]
        new_leaves = []
        for i, args in enumerate(zip(*leaves, strict=True)):
            weights = interpolate_ff(ff, controls[i], self.ff_mult)
            new_leaves.append(
                mlp_param_step(
                    weights,
                    *args,
                    exp_mult=self.exp_mult,
                    step_mult=self.step_mult,
                    lr_mult=lr_mult[i],
                )
            )
        return HyperV2State(
            params=jax.tree_util.tree_unflatten(treedef, new_leaves),
            state=model_state,
            rms_rolling=rms,
            mom_rolling=mom,
            fac_rolling=fac,
            iteration=state.iteration + 1,
            num_steps=state.num_steps,
            lstm_hidden_state=lstm_state,
            loss_buffer=loss_buffer,
        )


def velo_4000(**kwargs) -> HyperV2:
    """Google's released VeLO architecture (LSTM 512, 256 MLPs, ``ff_mult`` 100)."""
    return HyperV2(**_factory(512, 256, 100.0, kwargs))


def velo(**kwargs) -> HyperV2:
    """Full-size VeLO for meta-training from scratch (``ff_mult`` 1)."""
    return HyperV2(**_factory(512, 256, 1.0, kwargs))


def velo_s(**kwargs) -> HyperV2:
    """Small VeLO (LSTM 64, 32 MLPs), the Hugging Face ``velo-s`` baseline."""
    return HyperV2(**_factory(64, 32, 1.0, kwargs))


def _factory(hidden: int, inits: int, ff_mult: float, overrides: dict) -> dict:
    config = dict(
        lstm_hidden_size=hidden,
        param_inits=inits,
        ff_mult=ff_mult,
        use_bugged_next_lstm_state=False,
        use_bugged_loss_features=False,
    )
    config.update(overrides)
    return config


_FACTORY_NAMES = {(512, 256, 100.0): "velo_4000", (512, 256, 1.0): "velo", (64, 32, 1.0): "velo_s"}
