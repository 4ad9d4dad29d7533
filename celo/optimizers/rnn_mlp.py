"""RNN-MLP-LOpt: a per-tensor LSTM conditioning a per-parameter MLP (spec §7.1).

Metz et al. 2020 (arXiv 2009.11243). One update:

1. normalise the training loss with running statistics;
2. clip the gradient to ten times a running estimate of its RMS;
3. update momentum and RMS EMAs at five time scales;
4. run an LSTM over the tensors (a batch of one row per tensor) on 18 tensor
   statistics plus two messages from the previous step: ``from_lstm`` (the
   tensor-mean of a projection of the LSTM output) and ``from_mlp`` (the
   element-mean of 16 extra MLP outputs);
5. run the per-parameter MLP on 23 normalised accumulator channels plus
   tensor-constant features (time, sizes, the LSTM's 17 ``ff_inputs``) and step
   ``p ← p − o₀·exp(1e-3·o₁)·1e-3``.

Validation losses (``is_valid=True``) only update the validation-loss
statistics and the step counter.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from celo.lopt import (
    LSTMState,
    MomAccumulator,
    RmsAccumulator,
    linear_apply,
    linear_init,
    lstm_apply,
    lstm_init,
    lstm_initial_state,
    rolling_mom_init,
    rolling_mom_update,
    rolling_rms_init,
    rolling_rms_update,
    second_moment_normalizer,
    truncated_normal,
)
from celo.optimizers.base import LearnedOptimizer
from celo.optimizers.celo import tile_lstm_state

#: Scalar statistics per tensor fed to the LSTM (besides the two messages).
TENSOR_FEATURES = 18
#: Per-parameter MLP inputs before the LSTM's ``ff_inputs``: 23 normalised
#: channels, 11 time features and three tensor-size features.
MLP_FEATURES = 37
TIME_SCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
_TRAIN_LOSS_DECAY = 0.9
_VALID_LOSS_DECAY = 0.95
_CLIP_ALPHA = 0.99
_CLIP_MULT = 10.0


@flax.struct.dataclass
class LossNormalizerState:
    """EMA mean and variance of a loss; ``updates`` counts the values seen."""

    mean: jnp.ndarray
    var: jnp.ndarray
    updates: jnp.ndarray


@flax.struct.dataclass
class DynamicClipState:
    """EMA of the clipped gradients' RMS; ``iteration`` starts at 1 (float)."""

    iteration: jnp.ndarray
    value: jnp.ndarray


@flax.struct.dataclass
class RNNMLPState:
    """Inner state; field names follow the reference's ``RNNMLPLOptState``."""

    params: Any
    mom_rolling: MomAccumulator
    rms_rolling: RmsAccumulator
    iteration: jnp.ndarray
    state: Any
    lstm_hidden_state: LSTMState
    from_mlp: Any
    from_lstm: jnp.ndarray
    train_loss_accum: LossNormalizerState
    valid_loss_accum: LossNormalizerState
    dynamic_clip: DynamicClipState


def loss_normalizer_init() -> LossNormalizerState:
    zero = jnp.asarray(0.0, jnp.float32)
    return LossNormalizerState(mean=zero, var=zero, updates=jnp.asarray(0, jnp.int32))


def loss_normalizer_update(state: LossNormalizerState, loss, decay: float) -> LossNormalizerState:
    mean = decay * state.mean + (1.0 - decay) * loss
    var = decay * state.var + (1.0 - decay) * jnp.square(mean - loss)
    return LossNormalizerState(mean=mean, var=var, updates=state.updates + 1)


def _bias_correction(state: LossNormalizerState, decay: float, eps: float) -> jnp.ndarray:
    return 1.0 / (1 - decay ** jnp.asarray(state.updates, jnp.float32) + eps)


def normalized_loss(state: LossNormalizerState, loss, decay: float) -> jnp.ndarray:
    """``clip((ℓ − μ̂)/sqrt(σ̂² + 1e-8), −5, 5)`` with bias-corrected μ̂ and σ̂²."""
    c = _bias_correction(state, decay, 1e-8)
    return jnp.clip((loss - state.mean * c) * jax.lax.rsqrt(state.var * c + 1e-8), -5, 5)


def corrected_mean(state: LossNormalizerState, decay: float) -> jnp.ndarray:
    # The reference uses 1e-7 here (1e-8 in normalized_loss).
    return state.mean * _bias_correction(state, decay, 1e-7)


def dynamic_clip(state: DynamicClipState, grads) -> tuple[DynamicClipState, Any]:
    """Clip to ``±10·snd/(1 − 0.99^t)``, then fold the clipped RMS into ``snd``."""
    bound = (state.value / (1 - _CLIP_ALPHA**state.iteration)) * _CLIP_MULT
    grads = jax.tree_util.tree_map(lambda g: jnp.clip(g, -bound, bound), grads)
    leaves = jax.tree_util.tree_leaves(grads)
    avg_sq = sum(jnp.mean(jnp.square(g)) for g in leaves) / len(leaves)
    value = state.value * _CLIP_ALPHA + jnp.sqrt(1e-8 + avg_sq) * (1.0 - _CLIP_ALPHA)
    return DynamicClipState(iteration=state.iteration + 1, value=value), grads


def _log_mag(x):
    """``clip(log(1e-8 + |x|), −5, 5)`` (this optimizer's variant: no factor 0.5)."""
    return jnp.clip(jnp.log(1e-8 + jnp.abs(x)), -5, 5)


def tensor_features(m, rms, g, v, from_mlp, from_lstm, train_feat, valid_feat) -> jnp.ndarray:
    """The 52 LSTM inputs of one tensor, concatenated in sorted-name order."""
    f = {"from_mlp": from_mlp, "from_lstm": from_lstm}
    for name, x in (("ms", m), ("v", v)):
        mean = jnp.mean(x)
        f[f"mean_{name}_mag"] = _log_mag(mean)
        f[f"mean_{name}_sign"] = jnp.sign(mean)
        f[f"var_{name}"] = _log_mag(jnp.mean(jnp.square(x - mean)))
    mean_rms = jnp.mean(rms)
    f["mean_rms"] = _log_mag(mean_rms)
    f["mean_sign"] = jnp.sign(mean_rms)
    f["var_rms"] = _log_mag(jnp.mean(jnp.square(rms - mean_rms)))
    f["norm_weight"] = _log_mag(jnp.linalg.norm(v))
    f["g_norm"] = _log_mag(jnp.linalg.norm(g))
    f["is_scalar"] = jnp.asarray(1.0 if v.ndim == 0 else -1.0)
    shape = np.asarray(v.shape + (1,) * (4 - v.ndim), np.float32)
    for j in range(4):
        f[f"shape_{j}"] = jnp.log(shape[j]) - 1.0  # shifted towards zero mean
    f["train_loss_feat"] = train_feat
    f["valid_loss_feat"] = valid_feat
    return jnp.concatenate([jnp.reshape(f[k], (-1,)) for k in sorted(f)])


def sin_time_embedding(iteration) -> jnp.ndarray:
    """The 11 ``sin(t/(τπ))`` features of the step count."""
    return jnp.sin(iteration / (jnp.asarray(TIME_SCALES, jnp.float32) * jnp.pi))


def mlp_channels(m, rms, g, v) -> jnp.ndarray:
    """The 23 per-element channels, flattened to ``(N, 23)``, in sorted-name order.

    ``flat_g``, ``flat_v``, ``log_abs_v``, ``m`` (5), ``rms`` (5),
    ``rms_scaled_g = m·rsqrt(rms + 1e-6)`` (5), ``rsqrt`` (5).
    """
    k = m.shape[-1]
    m = jnp.reshape(m, (-1, k))
    rms = jnp.reshape(rms, (-1, rms.shape[-1]))
    rsqrt = jax.lax.rsqrt(rms + 1e-6)
    flat_v = jnp.reshape(v, (-1, 1))
    parts = [jnp.reshape(g, (-1, 1)), flat_v, jnp.log(jnp.abs(flat_v) + 1e-8), m, rms, m * rsqrt]
    return jnp.concatenate(parts + [rsqrt], axis=1)


def _variance_scaling(key, n: int) -> jnp.ndarray:
    """haiku's default VarianceScaling (fan-in, truncated normal) for a vector of ``n``."""
    return truncated_normal(key, (n,), np.sqrt(1.0 / n) / 0.87962566103423978)


@dataclasses.dataclass(frozen=True)
class RNNMLPLOpt(LearnedOptimizer):
    """RNN-MLP-LOpt. Defaults are the reference factory's ``rnn_mlp``."""

    step_multiplier: float = 1e-3
    magnitude_rate: float = 1e-3
    hidden_size: int = 32
    hidden_layer: int = 2
    from_mlp_size: int = 16
    from_lstm_size: int = 18
    lstm_to_ff: int = 17
    lstm_hidden_size: int = 64
    decays: tuple = (0.5, 0.9, 0.99, 0.999, 0.9999)

    needs_loss = True

    @property
    def name(self) -> str:
        return "rnn_mlp"

    def init(self, key):
        k_lstm, k_mlp, k_ff, k_in, k_mlp_net = jax.random.split(key, 5)
        k_from_lstm, k_from_mlp = jax.random.split(k_mlp)
        h = self.lstm_hidden_size
        rnn_in = TENSOR_FEATURES + self.from_lstm_size + self.from_mlp_size
        sizes = [MLP_FEATURES + self.lstm_to_ff] + [self.hidden_size] * self.hidden_layer
        sizes.append(2 + self.from_mlp_size)
        mlp_keys = jax.random.split(k_mlp_net, len(sizes) - 1)
        mlp = {
            f"mlp/~/linear_{i}": linear_init(k, sizes[i], sizes[i + 1])
            for i, k in enumerate(mlp_keys)
        }
        return {
            "initial_from_lstm": _variance_scaling(k_from_lstm, self.from_lstm_size),
            "initial_from_mlp": _variance_scaling(k_from_mlp, self.from_mlp_size),
            "lstm_init_state": lstm_initial_state(h),
            "rnn_params": {"rnn/linear": lstm_init(k_lstm, rnn_in, h)},
            "rnn_to_ff_params": {"rnn_to_ff": linear_init(k_ff, h, self.lstm_to_ff)},
            "rnn_to_in_params": {"rnn_to_in": linear_init(k_in, h, self.from_lstm_size)},
            "ffmod_params": mlp,
        }

    def init_state(self, theta, params, model_state, num_steps, key):
        del num_steps, key
        n_leaves = len(jax.tree_util.tree_leaves(params))
        return RNNMLPState(
            params=params,
            mom_rolling=rolling_mom_init(params, self.decays),
            rms_rolling=rolling_rms_init(params, self.decays),
            iteration=jnp.asarray(0, jnp.int32),
            state=model_state,
            lstm_hidden_state=tile_lstm_state(theta["lstm_init_state"], n_leaves),
            from_mlp=jax.tree_util.tree_map(lambda _: theta["initial_from_mlp"], params),
            from_lstm=theta["initial_from_lstm"],
            train_loss_accum=loss_normalizer_init(),
            valid_loss_accum=loss_normalizer_init(),
            dynamic_clip=DynamicClipState(
                iteration=jnp.asarray(1.0, jnp.float32),
                value=jnp.asarray(1.0, jnp.float32) * (1 - _CLIP_ALPHA),
            ),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del key
        if loss is None:
            raise ValueError(
                "rnn_mlp needs the training loss: call update(state, grad, loss=loss)."
            )
        # Both branches are cheap to trace; select rather than branch on a traced flag.
        valid = state.replace(
            iteration=state.iteration + 1,
            valid_loss_accum=loss_normalizer_update(
                state.valid_loss_accum, loss, _VALID_LOSS_DECAY
            ),
        )
        train = self._train_step(theta, state, grad, loss, model_state)
        is_valid = jnp.asarray(is_valid, jnp.bool_)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(is_valid, a, b), valid, train)

    def _train_step(self, theta, state: RNNMLPState, grad, loss, model_state) -> RNNMLPState:
        train_accum = loss_normalizer_update(state.train_loss_accum, loss, _TRAIN_LOSS_DECAY)
        train_feat = normalized_loss(train_accum, loss, _TRAIN_LOSS_DECAY)
        valid_loss = corrected_mean(state.valid_loss_accum, _VALID_LOSS_DECAY)
        # The validation loss is expressed in the training loss's statistics.
        valid_feat = normalized_loss(train_accum, valid_loss, _TRAIN_LOSS_DECAY)

        clip_state, grad = dynamic_clip(state.dynamic_clip, grad)
        mom = rolling_mom_update(state.mom_rolling, grad, self.decays)
        rms = rolling_rms_update(state.rms_rolling, grad, self.decays)

        treedef = jax.tree_util.tree_structure(state.params)
        flat = [
            treedef.flatten_up_to(t) for t in (mom.m, rms.rms, grad, state.params, state.from_mlp)
        ]
        rnn_in = jnp.stack(
            [
                tensor_features(m, r, g, v, fm, state.from_lstm, train_feat, valid_feat)
                for m, r, g, v, fm in zip(*flat, strict=True)
            ]
        )
        lstm_out, lstm_state = lstm_apply(
            theta["rnn_params"]["rnn/linear"], rnn_in, state.lstm_hidden_state
        )
        # DeepSets-style sharing across tensors: the mean of a projection of every output.
        from_lstm = jnp.mean(linear_apply(theta["rnn_to_in_params"]["rnn_to_in"], lstm_out), 0)
        ff_inputs = linear_apply(theta["rnn_to_ff_params"]["rnn_to_ff"], lstm_out)

        n_tensors = len(flat[0])
        time_feat = sin_time_embedding(state.iteration)
        new_params, from_mlp = [], []
        for i, (m, r, g, v, _) in enumerate(zip(*flat, strict=True)):
            out = self._mlp(theta["ffmod_params"], m, r, g, v, time_feat, n_tensors, ff_inputs[i])
            step = out[:, 0] * jnp.exp(out[:, 1] * self.magnitude_rate) * self.step_multiplier
            new_params.append(v - jnp.reshape(step, v.shape))
            from_mlp.append(jnp.mean(out[:, 2:], axis=0))

        return RNNMLPState(
            params=jax.tree_util.tree_unflatten(treedef, new_params),
            mom_rolling=mom,
            rms_rolling=rms,
            iteration=state.iteration + 1,
            state=model_state,
            lstm_hidden_state=lstm_state,
            from_mlp=jax.tree_util.tree_unflatten(treedef, from_mlp),
            from_lstm=from_lstm,
            train_loss_accum=train_accum,
            valid_loss_accum=state.valid_loss_accum,
            dynamic_clip=clip_state,
        )

    def _mlp(self, mlp: dict, m, rms, g, v, time_feat, n_tensors: int, ff_inputs) -> jnp.ndarray:
        """Per-parameter MLP outputs ``(N, 2 + from_mlp_size)`` for one tensor."""
        x = second_moment_normalizer(mlp_channels(m, rms, g, v), axis=0)
        n = x.shape[1]
        # Inputs that are constant over the tensor enter the first layer as a bias.
        const = jnp.concatenate(
            [
                time_feat,
                jnp.reshape(jnp.log(float(n_tensors)) - 1.0, (1,)),
                jnp.reshape(jnp.log(jnp.linalg.norm(jnp.reshape(v, (-1,))) + 1e-8), (1,)),
                jnp.reshape(jnp.log(float(v.size)), (1,)),
                ff_inputs,
            ]
        )
        first = mlp["mlp/~/linear_0"]
        x = jax.nn.relu(x @ first["w"][:n] + (first["b"] + const @ first["w"][n:]))
        n_layers = len(mlp)
        for i in range(1, n_layers):
            x = linear_apply(mlp[f"mlp/~/linear_{i}"], x)
            if i < n_layers - 1:
                x = jax.nn.relu(x)
        return x


def rnn_mlp(**kwargs) -> RNNMLPLOpt:
    """RNN-MLP-LOpt with the reference factory's defaults."""
    return RNNMLPLOpt(**kwargs)
