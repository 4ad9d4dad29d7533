"""Shared pure-JAX building blocks of the learned optimizers.

Everything here is math over pytrees: accumulators, feature normalisers, the
loss-trend buffer, the progress embedding and the small haiku-compatible
networks (linear layers and the LSTM) whose parameter layout the released
checkpoints depend on.
"""

from celo.lopt.accumulators import (
    FactoredAccum,
    MomAccumulator,
    RmsAccumulator,
    factored_dims,
    factored_init,
    factored_update,
    rolling_mom_init,
    rolling_mom_update,
    rolling_rms_init,
    rolling_rms_update,
    safe_rsqrt,
)
from celo.lopt.features import (
    clip_log_abs,
    fractional_tanh_embed,
    second_moment_normalizer,
)
from celo.lopt.loss_buffer import (
    loss_buffer_features,
    loss_buffer_init,
    loss_buffer_update,
)
from celo.lopt.nets import (
    LSTMState,
    linear_apply,
    linear_init,
    lstm_apply,
    lstm_init,
    lstm_initial_state,
    truncated_normal,
)

__all__ = [
    "FactoredAccum",
    "LSTMState",
    "MomAccumulator",
    "RmsAccumulator",
    "clip_log_abs",
    "factored_dims",
    "factored_init",
    "factored_update",
    "fractional_tanh_embed",
    "linear_apply",
    "linear_init",
    "loss_buffer_features",
    "loss_buffer_init",
    "loss_buffer_update",
    "lstm_apply",
    "lstm_init",
    "lstm_initial_state",
    "rolling_mom_init",
    "rolling_mom_update",
    "rolling_rms_init",
    "rolling_rms_update",
    "safe_rsqrt",
    "second_moment_normalizer",
    "truncated_normal",
]
