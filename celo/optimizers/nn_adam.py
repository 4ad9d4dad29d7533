"""NN-Adam: Adam whose per-tensor hyperparameters are steered by an LSTM (spec §7.3).

Each tensor carries its own learning rate, β₁, β₂ and ε, stored in scaled
spaces so that additive LSTM outputs are well conditioned:

* learning rate and ε as ``0.1·log(x)`` (clipped to [1e-8, 1e3] and
  [1e-11, 1e4] on the way back);
* β₁ and β₂ as ``0.1·log(1 − β)`` (``10·x`` clipped to [−10, 0] on the way back).

An update takes an un-bias-corrected Adam step with the current values,
``Δp = lr·(1 + ε)·m / (ε + sqrt(v + 1e-10))`` (Adam for small ε, SGD with
momentum for large ε), then feeds 19 per-tensor statistics through the LSTM
and adds ``0.01·rnn_to_controls(h)`` to the four scaled hyperparameters, which
are finally re-clipped by a round trip through their transforms.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from celo.lopt import (
    LSTMState,
    clip_log_abs,
    linear_apply,
    lstm_apply,
    lstm_init,
    lstm_initial_state,
)
from celo.optimizers.base import LearnedOptimizer
from celo.optimizers.celo import tile_lstm_state

#: Per-tensor statistics fed to the LSTM.
NUM_FEATURES = 19
HPARAMS = ("lr", "beta1", "beta2", "epsilon")


@flax.struct.dataclass
class MeanAndMeanSquareAccumulator:
    """First and second gradient moments with per-tensor decays."""

    m: Any
    rms: Any
    t: jnp.ndarray


@flax.struct.dataclass
class NNAdamState:
    """Inner state; field names follow the reference's ``NNAdamState``.

    The ``per_layer_*`` fields hold one scalar per parameter tensor, in the
    scaled spaces described in the module docstring.
    """

    params: Any
    state: Any
    iteration: jnp.ndarray
    rolling_features: MeanAndMeanSquareAccumulator
    per_layer_lr: Any
    per_layer_beta1: Any
    per_layer_beta2: Any
    per_layer_epsilon: Any
    lstm_hidden_state: LSTMState


def _log_scaled(x):
    return 0.1 * jnp.log(x)


def _lr_from_scaled(s):
    return jnp.clip(jnp.exp(10.0 * s), 1e-8, 1e3)


def _eps_from_scaled(s):
    return jnp.clip(jnp.exp(10.0 * s), 1e-11, 1e4)


def _one_minus_log_scaled(x):
    return 0.1 * jnp.log(1 - x)


def _beta_from_scaled(s):
    return 1 - jnp.exp(jnp.clip(10 * s, -10, 0))


#: scaled → value and value → scaled, per hyperparameter.
_TRANSFORMS = {
    "lr": (_lr_from_scaled, _log_scaled),
    "beta1": (_beta_from_scaled, _one_minus_log_scaled),
    "beta2": (_beta_from_scaled, _one_minus_log_scaled),
    "epsilon": (_eps_from_scaled, _log_scaled),
}


def _reclip(name: str, scaled):
    """Map a scaled value to its valid range by a round trip through the transforms."""
    decode, encode = _TRANSFORMS[name]
    return encode(decode(scaled))


def tensor_features(p, g, m, rms, lr, beta1, beta2, epsilon) -> jnp.ndarray:
    """The 19 LSTM inputs of one tensor, in sorted-name order (as the reference)."""
    feats = {}
    for name, x in (("m", m), ("p", p), ("g", g)):
        mean = jnp.mean(x)
        feats[f"mean_{name}_mag"] = clip_log_abs(mean)
        feats[f"mean_{name}_sign"] = jnp.sign(mean)
        feats[f"var_{name}"] = clip_log_abs(jnp.mean(jnp.square(x - mean)))
    mean_rms = jnp.mean(rms)
    feats["mean_rms"] = clip_log_abs(mean_rms)
    feats["mean_sign"] = jnp.sign(mean_rms)
    feats["var_rms"] = clip_log_abs(jnp.mean(jnp.square(rms - mean_rms)))
    feats["mean_gabs_mag"] = clip_log_abs(jnp.mean(jnp.abs(g)))
    feats["is_scalar"] = jnp.asarray(1.0 if p.ndim == 0 else -1.0)
    feats["is_bias"] = jnp.asarray(1.0 if p.ndim == 1 else -1.0)
    for name, x in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("epsilon", epsilon)):
        feats[name] = jnp.clip(x, -5, 5) * 0.2
    return jnp.stack([feats[k] for k in sorted(feats)])


@dataclasses.dataclass(frozen=True)
class NNAdam(LearnedOptimizer):
    """NN-Adam. Defaults are the reference factory's ``nnadam`` (LSTM width 64).

    Attributes:
      output_scale: multiplier on the LSTM's hyperparameter deltas.
      initial_learning_rate, initial_beta1, initial_beta2, initial_epsilon:
        the hyperparameters every tensor starts from (stored in theta).
      decay_strength: per-step pull of the hyperparameters back to theta's
        values (0 disables it).
      lstm_hidden_size: LSTM width.
    """

    output_scale: float = 0.01
    initial_learning_rate: float = 1e-4
    initial_beta1: float = 0.9
    initial_beta2: float = 0.999
    initial_epsilon: float = 1e-8
    decay_strength: float = 0.0
    lstm_hidden_size: int = 64

    needs_num_steps = True

    @property
    def name(self) -> str:
        return "nnadam"

    def init(self, key):
        h = self.lstm_hidden_size
        f32 = lambda x: jnp.asarray(x, jnp.float32)
        # The control head starts at zero (haiku's Constant(0) weight initialiser).
        controls = {
            "w": jnp.zeros((h, len(HPARAMS)), jnp.float32),
            "b": jnp.zeros((len(HPARAMS),), jnp.float32),
        }
        return {
            "lstm_init_state": lstm_initial_state(h),
            "rnn_params": {"rnn/linear": lstm_init(key, NUM_FEATURES, h)},
            "rnn_to_controls_params": {"rnn_to_controls": controls},
            # float32 inputs, as the reference's jitted transforms see them.
            "per_layer_lr": _log_scaled(f32(self.initial_learning_rate)),
            "per_layer_beta1": _one_minus_log_scaled(f32(self.initial_beta1)),
            "per_layer_beta2": _one_minus_log_scaled(f32(self.initial_beta2)),
            "per_layer_epsilon": _log_scaled(f32(self.initial_epsilon)),
        }

    def init_state(self, theta, params, model_state, num_steps, key):
        del key
        if num_steps is None:
            raise ValueError("nnadam needs the training horizon: pass num_steps to init.")
        n_leaves = len(jax.tree_util.tree_leaves(params))
        per_layer = {
            name: jax.tree_util.tree_map(lambda _, n=name: theta[f"per_layer_{n}"], params)
            for name in HPARAMS
        }
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return NNAdamState(
            params=params,
            state=model_state,
            iteration=jnp.asarray(0, jnp.int32),
            rolling_features=MeanAndMeanSquareAccumulator(
                m=zeros, rms=zeros, t=jnp.asarray(0, jnp.int32)
            ),
            per_layer_lr=per_layer["lr"],
            per_layer_beta1=per_layer["beta1"],
            per_layer_beta2=per_layer["beta2"],
            per_layer_epsilon=per_layer["epsilon"],
            lstm_hidden_state=tile_lstm_state(theta["lstm_init_state"], n_leaves),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del loss, is_valid, key
        treedef = jax.tree_util.tree_structure(state.params)
        flat = lambda tree: treedef.flatten_up_to(tree)
        scaled = {n: flat(getattr(state, f"per_layer_{n}")) for n in HPARAMS}
        value = {n: [_TRANSFORMS[n][0](s) for s in scaled[n]] for n in HPARAMS}

        params = flat(state.params)
        grads = [jnp.clip(g, -1000.0, 1000.0) for g in flat(grad)]
        acc = state.rolling_features
        ms, vs, new_params = [], [], []
        for i, (p, g, m, v) in enumerate(
            zip(params, grads, flat(acc.m), flat(acc.rms), strict=True)
        ):
            b1, b2 = value["beta1"][i], value["beta2"][i]
            lr, eps = value["lr"][i], value["epsilon"][i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * (g * g)
            new_params.append(p - lr * (1.0 + eps) / (eps + jax.lax.sqrt(v + 1e-10)) * m)
            ms.append(m)
            vs.append(v)

        # The LSTM sees the pre-update params and the pre-update (scaled) hparams.
        rows = [
            tensor_features(p, g, m, v, *(scaled[n][i] for n in HPARAMS))
            for i, (p, g, m, v) in enumerate(zip(params, grads, ms, vs, strict=True))
        ]
        h, lstm_state = lstm_apply(
            theta["rnn_params"]["rnn/linear"], jnp.stack(rows), state.lstm_hidden_state
        )
        deltas = linear_apply(theta["rnn_to_controls_params"]["rnn_to_controls"], h)
        deltas = deltas * self.output_scale

        new_scaled = {}
        for j, n in enumerate(HPARAMS):
            new = [s + deltas[i, j] for i, s in enumerate(scaled[n])]
            if self.decay_strength > 0:
                base = theta[f"per_layer_{n}"]
                new = [s - (s - base) * self.decay_strength for s in new]
            new_scaled[n] = jax.tree_util.tree_unflatten(treedef, [_reclip(n, s) for s in new])

        unflat = lambda xs: jax.tree_util.tree_unflatten(treedef, xs)
        return NNAdamState(
            params=unflat(new_params),
            state=model_state,
            iteration=state.iteration + 1,
            rolling_features=MeanAndMeanSquareAccumulator(
                m=unflat(ms), rms=unflat(vs), t=acc.t + 1
            ),
            per_layer_lr=new_scaled["lr"],
            per_layer_beta1=new_scaled["beta1"],
            per_layer_beta2=new_scaled["beta2"],
            per_layer_epsilon=new_scaled["epsilon"],
            lstm_hidden_state=lstm_state,
        )


def nnadam(**kwargs) -> NNAdam:
    """NN-Adam with the reference factory's configuration."""
    return NNAdam(**kwargs)
