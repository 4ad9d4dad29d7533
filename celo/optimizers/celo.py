"""Celo: a per-parameter MLP update rule driven by a learned LSTM scheduler (spec §4).

Per tensor the update is ``Δp = lr_mult · 1e-3 · d · exp(1e-3·μ) · RMS(p)``,
where ``d`` and ``μ`` come from the per-parameter MLP (:mod:`celo.lopt.ff_mlp`)
and ``lr_mult = 0.1·exp(s)`` from an LSTM fed only a progress embedding and
loss-trend features. ``train_phase=1`` (``celo_phase1``) ignores ``lr_mult``;
``train_phase=2`` (``celo``) applies it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from celo.lopt import (
    FactoredAccum,
    LSTMState,
    MomAccumulator,
    RmsAccumulator,
    celo_kernel,
    fractional_tanh_embed,
    linear_apply,
    linear_init,
    loss_buffer_features,
    loss_buffer_init,
    loss_buffer_update,
    lstm_apply,
    lstm_init,
    lstm_initial_state,
    truncated_normal,
)
from celo.lopt.ff_mlp import GROUP_CHANNELS, NUM_INPUTS, mlp_outputs, stack_w0
from celo.optimizers.base import LearnedOptimizer

#: Width of the scheduler input: 9 progress features + 9 loss-trend features.
SCHEDULER_INPUTS = 18
_DEFAULT_KEY = 42


@flax.struct.dataclass
class CeloState:
    """Inner state. The accumulators are kept decay-major, one
    :class:`~celo.lopt.celo_kernel.LeafState` per parameter tensor in flatten
    order (see :func:`reference_view` for the reference's ``(..., K)`` layout)."""

    params: Any
    state: Any
    accumulators: tuple
    iteration: jnp.ndarray
    num_steps: jnp.ndarray
    lstm_hidden_state: LSTMState
    loss_buffer: dict


def reference_view(state: CeloState) -> dict:
    """The accumulators in the reference's layout: ``mom_rolling``, ``rms_rolling``
    and ``fac_rolling`` with a trailing decay axis (for inspection and tests)."""
    treedef = jax.tree_util.tree_structure(state.params)
    accs = state.accumulators
    stack = lambda xs, empty_shape: jnp.stack(xs, -1) if xs else jnp.zeros(empty_shape, jnp.float32)
    n_fac = max(len(a.v_row) or len(a.v_diag) for a in accs) if accs else 0
    leaves = jax.tree_util.tree_leaves(state.params)

    def shaped(x, p):
        return x.reshape(p.shape + x.shape[-1:])

    unflat = lambda xs: jax.tree_util.tree_unflatten(treedef, xs)
    return {
        "mom_rolling": MomAccumulator(
            m=unflat([shaped(stack(a.m, None), p) for a, p in zip(accs, leaves)]),
            t=jnp.full((len(accs[0].m) if accs else 0,), state.iteration, jnp.int32),
        ),
        "rms_rolling": RmsAccumulator(
            rms=unflat([shaped(stack(a.rms, None), p) for a, p in zip(accs, leaves)]),
            t=jnp.full((len(accs[0].rms) if accs else 0,), state.iteration, jnp.int32),
        ),
        "fac_rolling": FactoredAccum(
            v_col=unflat([stack(a.v_col, (0, n_fac)) for a in accs]),
            v_row=unflat([stack(a.v_row, (0, n_fac)) for a in accs]),
            v_diag=unflat(
                [
                    shaped(stack(a.v_diag, None), p) if a.v_diag else jnp.zeros((0, n_fac))
                    for a, p in zip(accs, leaves)
                ]
            ),
        ),
    }


def init_ff_mod(key, hidden: int, layers: int = 2, outputs: int = 3) -> dict:
    """One per-parameter MLP in the reference layout (module ``"~"``).

    Every ``w0__k`` block uses the fan-in of the whole first layer (30).
    """
    sizes = [hidden] * layers + [outputs]
    keys = jax.random.split(key, len(GROUP_CHANNELS) + len(sizes))
    params: dict[str, jnp.ndarray] = {}
    std0 = 1.0 / np.sqrt(NUM_INPUTS)
    for k, c in enumerate(GROUP_CHANNELS):
        params[f"w0__{k}"] = truncated_normal(keys[k], (c, sizes[0]), std0)
    params["b0"] = jnp.zeros((sizes[0],), jnp.float32)
    for i in range(1, len(sizes)):
        params[f"w{i}"] = truncated_normal(
            keys[len(GROUP_CHANNELS) + i], (sizes[i - 1], sizes[i]), 1.0 / np.sqrt(sizes[i - 1])
        )
        params[f"b{i}"] = jnp.zeros((sizes[i],), jnp.float32)
    return {"~": params}


def init_scheduler(key, n_in: int, hidden: int, n_controls: int, mix_layers: bool = True) -> dict:
    """Scheduler params: mix layers ``linear`` (dead), ``linear_1``, ``linear_2``,
    the LSTM ``rnn/linear``, and the ``rnn_to_controls`` and ``step_size`` heads."""
    keys = jax.random.split(key, 6)
    params = {}
    if mix_layers:
        params["linear"] = linear_init(keys[0], n_in, hidden)
        params["linear_1"] = linear_init(keys[1], n_in, hidden)
        params["linear_2"] = linear_init(keys[2], n_in, hidden)
        lstm_in = hidden
    else:
        lstm_in = n_in
    params["rnn/linear"] = lstm_init(keys[3], lstm_in, hidden)
    if n_controls:
        params["rnn_to_controls"] = linear_init(keys[4], hidden, n_controls)
    params["step_size"] = linear_init(keys[5], hidden, 1)
    return params


def scheduler_forward(params: dict, x: jnp.ndarray, state: LSTMState):
    """Mix layers, LSTM and heads; returns ``(controls or None, s, h, new_state)``.

    The first mix layer ``linear`` is dead in the reference (its output is
    overwritten), so it is not evaluated; its parameters stay in theta.
    """
    if "linear_1" in params:
        u = jax.nn.relu(linear_apply(params["linear_1"], x))
        v = jnp.max(u, axis=0, keepdims=True)
        x = linear_apply(params["linear_2"], x) + v
    h, new_state = lstm_apply(params["rnn/linear"], x, state)
    controls = linear_apply(params["rnn_to_controls"], h) if "rnn_to_controls" in params else None
    s = jnp.squeeze(linear_apply(params["step_size"], h), -1)
    return controls, s, h, new_state


def scheduler_inputs(iteration, num_steps, loss_features) -> jnp.ndarray:
    """The 18 task-agnostic scheduler features (sorted key order:
    ``fraction_left`` then ``loss_features``)."""
    fraction = iteration / jnp.asarray(num_steps, dtype=jnp.float32)
    return jnp.concatenate([fractional_tanh_embed(fraction), loss_features], axis=0)


def scheduler_step(theta, state, loss):
    """The scheduler half of a Celo/Celo-Adam update.

    Pushes ``loss`` into the loss buffer, builds the 18 scheduler features for
    every tensor (the rows are identical) and runs the scheduler network.
    Returns ``(loss_buffer, controls, lr_mult, lstm_state)``; ``lr_mult`` has
    one (identical) entry per tensor.
    """
    loss_buffer = loss_buffer_update(state.loss_buffer, loss)
    row = scheduler_inputs(state.iteration, state.num_steps, loss_buffer_features(loss_buffer))
    n_leaves = state.lstm_hidden_state.hidden.shape[0]
    x = jnp.broadcast_to(row, (n_leaves, row.shape[0]))
    controls, s, _, lstm_state = scheduler_forward(theta["rnn_params"], x, state.lstm_hidden_state)
    return loss_buffer, controls, jnp.exp(s) * 0.1, lstm_state


def tile_lstm_state(init_state: LSTMState, n: int) -> LSTMState:
    return jax.tree_util.tree_map(lambda x: jnp.tile(x, [n] + [1] * (x.ndim - 1)), init_state)


@dataclasses.dataclass(frozen=True)
class Celo(LearnedOptimizer):
    """Celo (``train_phase=2``) and Celo phase 1 (``train_phase=1``).

    Defaults are the factory configuration of the reference (``celo``).
    """

    lstm_hidden_size: int = 64
    ff_hidden_size: int = 4
    ff_hidden_layers: int = 2
    initial_momentum_decays: tuple = (0.9, 0.99, 0.999)
    initial_rms_decays: tuple = (0.999,)
    initial_adafactor_decays: tuple = (0.9, 0.99, 0.999)
    param_inits: int = 1
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    train_phase: int = 2

    needs_num_steps = True
    needs_loss = True

    @property
    def name(self) -> str:
        return "celo" if self.train_phase > 1 else "celo_phase1"

    def init(self, key):
        key1, key = jax.random.split(key)
        ff_keys = jax.random.split(key1, self.param_inits)
        ff_mod_stack = jax.vmap(
            lambda k: init_ff_mod(k, self.ff_hidden_size, self.ff_hidden_layers)
        )(ff_keys)
        key1, key = jax.random.split(key)
        return {
            "ff_mod_stack": ff_mod_stack,
            "lstm_init_state": lstm_initial_state(self.lstm_hidden_size),
            "rnn_params": init_scheduler(
                key1, SCHEDULER_INPUTS, self.lstm_hidden_size, self.param_inits
            ),
        }

    def get_frozen_param_keys(self):
        if self.train_phase == 1:
            return ["lstm_init_state", "rnn_params"]
        return ["ff_mod_stack"]

    def init_state(self, theta, params, model_state, num_steps, key):
        del key
        leaves = jax.tree_util.tree_leaves(params)
        k = (
            len(self.initial_momentum_decays),
            len(self.initial_rms_decays),
            len(self.initial_adafactor_decays),
        )
        return CeloState(
            params=params,
            state=model_state,
            accumulators=tuple(celo_kernel.init_leaf(p, *k) for p in leaves),
            iteration=jnp.asarray(0, jnp.int32),
            num_steps=jnp.asarray(num_steps, jnp.int32),
            lstm_hidden_state=tile_lstm_state(theta["lstm_init_state"], len(leaves)),
            loss_buffer=loss_buffer_init(num_steps),
        )

    def scheduler_step(self, theta, state: CeloState, loss):
        """Loss buffer, scheduler features and LSTM: ``(buffer, controls, lr_mult, lstm)``."""
        return scheduler_step(theta, state, loss)

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del is_valid, key
        loss_buffer, controls, lr_mult, lstm_state = self.scheduler_step(theta, state, loss)
        controls = jax.nn.softmax(controls, axis=-1)
        decays = (
            self.initial_momentum_decays,
            self.initial_rms_decays,
            self.initial_adafactor_decays,
        )
        ff = theta["ff_mod_stack"]["~"]
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        grads = treedef.flatten_up_to(grad)
        new_leaves, new_accs = [], []
        for i, (p, g, acc) in enumerate(zip(leaves, grads, state.accumulators)):
            new_p, new_acc = celo_kernel.celo_leaf_update(
                self._interpolate(ff, controls[i]),
                p,
                jnp.clip(g, -1000.0, 1000.0),
                acc,
                decays,
                lr_mult=lr_mult[i] if self.train_phase > 1 else None,
                exp_mult=self.exp_mult,
                step_mult=self.step_mult,
            )
            new_leaves.append(new_p)
            new_accs.append(new_acc)
        return CeloState(
            params=jax.tree_util.tree_unflatten(treedef, new_leaves),
            state=model_state,
            accumulators=tuple(new_accs),
            iteration=state.iteration + 1,
            num_steps=state.num_steps,
            lstm_hidden_state=lstm_state,
            loss_buffer=loss_buffer,
        )

    def _interpolate(self, ff: dict, control: jnp.ndarray) -> dict:
        return interpolate_ff(ff, control)


def interpolate_ff(ff: dict, control: jnp.ndarray, ff_mult: float | None = None) -> dict:
    """Per-tensor MLP weights ``ff_mult · mean_k(control_k · ff_mod_stack[k])``.

    Returns the weights in :func:`~celo.lopt.ff_mlp.mlp_outputs`' layout.
    ``ff_mult=None`` skips the multiplication (Celo); HyperV2 passes its
    ``ff_mult``, which scales every leaf, biases included.
    """

    def mix(w):
        out = jnp.mean(w * control.reshape((-1,) + (1,) * (w.ndim - 1)), axis=0)
        return out if ff_mult is None else out * ff_mult

    mixed = jax.tree_util.tree_map(mix, ff)
    out = {k: mixed[k] for k in ("b0", "w1", "b1", "w2", "b2")}
    out["w0"] = stack_w0(mixed)
    return out


def mlp_param_step(weights, p, g, m, v, fg, vc, vr, vd, *, exp_mult, step_mult, lr_mult=None):
    """``p − lr_mult · d · exp(exp_mult·μ) · RMS(p) · step_mult`` for one tensor (§4.7).

    Scalars are run as shape (1,) and squeezed back; ``lr_mult=None`` leaves
    the step unscaled (Celo phase 1).
    """
    scalar = p.ndim == 0
    if scalar:
        p, g, m, v, fg, vd = (x[None] for x in (p, g, m, v, fg, vd))
    d, mu = mlp_outputs(weights, p, g, m, v, fg, vc, vr, vd)
    param_scale = jnp.sqrt(jnp.mean(jnp.square(p)) + 1e-9)
    step = d * (param_scale * jnp.exp(mu * exp_mult)) * step_mult
    if lr_mult is not None:
        step = lr_mult * step
    new_p = p - step
    return new_p[0] if scalar else new_p


def celo(**kwargs) -> Celo:
    """Released Celo (phase 2): the scheduler's ``lr_mult`` scales the MLP step."""
    return Celo(train_phase=2, **kwargs)


def celo_phase1(**kwargs) -> Celo:
    """Celo phase 1: the same network, with the scheduler output ignored."""
    return Celo(train_phase=1, **kwargs)
