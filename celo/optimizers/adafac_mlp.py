"""AdaFac-MLP-LOpt: a per-parameter MLP over Adafactor-style features (spec §7.2).

Metz et al. 2022. Every parameter gets 28 accumulator features (gradient,
value, momentum, RMS and factored second moments), normalised per tensor and
channel, plus 11 un-normalised ``tanh(t/τ − 1)`` time features; a small ReLU
MLP maps them to a direction ``d`` and magnitude ``μ`` and
``p ← p − d·exp(exp_mult·μ)·step_mult``. The accumulator decays are learned in
the ``log(1 − β)/10`` parameterisation (§3.3), starting at the initial decays.

The MLP is evaluated as explicit multiply-adds (no ``(..., 39)`` feature
tensor, no per-element matmuls) so that XLA fuses each tensor's update into a
few elementwise loops: the per-channel normaliser is folded into the
first-layer weights, the time features (constant over a tensor) into its
bias, and the Adafactor row/column channels pass through the first layer at
their reduced size before broadcasting.
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
    truncated_normal,
)
from celo.optimizers.base import LearnedOptimizer

TIME_SCALES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
_NORM_EPS = 1e-5


@flax.struct.dataclass
class AdafacMLPState:
    """Inner state; field names follow the reference's ``AdafacMLPLOptState``."""

    params: Any
    state: Any
    mom_rolling: MomAccumulator
    rms_rolling: RmsAccumulator
    fac_rolling_features: FactoredAccum
    num_steps: jnp.ndarray
    iteration: jnp.ndarray


def tanh_time_embedding(iteration: jnp.ndarray) -> jnp.ndarray:
    """The 11 ``tanh(t/τ − 1)`` features of the raw step count."""
    scales = jnp.asarray(TIME_SCALES, dtype=jnp.float32)
    return jnp.tanh(iteration / scales - 1.0)


def learned_decay(initial: tuple, offset: jnp.ndarray) -> jnp.ndarray:
    """``1 − exp(10·(log(1 − β₀)/10 + θ))``: equals ``β₀`` (in float32) at ``θ = 0``."""
    base = jnp.log(1 - jnp.asarray(initial, dtype=jnp.float32)) / 10.0
    return 1 - jnp.exp((base + offset) * 10.0)


def _inv_rms(x: jnp.ndarray) -> jnp.ndarray:
    return jax.lax.rsqrt(_NORM_EPS + jnp.mean(jnp.square(x)))


def _split(x: jnp.ndarray) -> list[jnp.ndarray]:
    return [x[..., k] for k in range(x.shape[-1])]


def mlp_step_outputs(nn: dict, time_feat, p, g, m, rms, fac_g, v_col, v_row, v_diag):
    """Direction and magnitude of the MLP for one tensor (rank ≥ 1).

    Args:
      nn: ``w0`` (C + 11, H), ``b0``, ``w1`` …, ``w{L}`` (H, 2), ``b{L}``.
      time_feat: the 11 time features.
      p, g: parameter and raw gradient.
      m, rms, fac_g, v_col, v_row, v_diag: updated accumulators with a
        trailing decay axis.

    Returns:
      ``(d, mu)``, each shaped like ``p``.
    """
    rsqrt = jax.lax.rsqrt(rms + 1e-6)
    # Per-element channels, in the reference's concatenation order.
    elem = [g, p, *_split(m), *_split(rms), *_split(m * rsqrt), *_split(rsqrt), *_split(fac_g)]
    elem_rows = list(range(len(elem)))
    dims = factored_dims(g.shape)
    k_fac = (v_col if dims is not None else v_diag).shape[-1]
    # First-layer rows of the four Adafactor statistics groups and the factored momentum.
    vr_row, vc_row, rr_row, rc_row, fm_row = (len(elem) + i * k_fac for i in range(5))
    # Row/column channels are constant along one axis: (values, w0 row) at reduced size.
    row_terms, col_terms = [], []
    if dims is not None:
        d1, d0 = dims
        reduced_d1 = d1 - 1 if d1 > d0 else d1
        row_factor = safe_rsqrt(v_row / (jnp.mean(v_row, axis=reduced_d1, keepdims=True) + 1e-9))
        col_factor = safe_rsqrt(v_col)
        for k in range(k_fac):
            vr, vc = v_row[..., k], v_col[..., k]
            row_terms += [(vr, vr_row + k), (jax.lax.rsqrt(vr + 1e-8), rr_row + k)]
            col_terms += [(vc, vc_row + k), (jax.lax.rsqrt(vc + 1e-8), rc_row + k)]
        fac_mom = m * jnp.expand_dims(row_factor, d0) * jnp.expand_dims(col_factor, d1)
    else:
        # Non-factored leaves repeat the diagonal statistics, as RMSProp would see them.
        rd = jax.lax.rsqrt(v_diag + 1e-8)
        for k in range(k_fac):
            vd = v_diag[..., k]
            elem += [vd, vd, rd[..., k], rd[..., k]]
            elem_rows += [vr_row + k, vc_row + k, rr_row + k, rc_row + k]
        fac_mom = m * (v_diag + 1e-6) ** -0.5
    elem += _split(fac_mom)
    elem_rows += [fm_row + k for k in range(fac_mom.shape[-1])]
    n_norm = fm_row + fac_mom.shape[-1]

    w0 = nn["w0"]
    # The time features are the same for every element: fold them into the bias.
    bias0 = nn["b0"] + time_feat @ w0[n_norm:]
    # Each channel's normaliser is a per-tensor scalar: fold it into its (H,) weight row.
    # A broadcast row/column channel has the same mean square as its reduced vector.
    elem_w = [(x, w0[r] * _inv_rms(x)) for x, r in zip(elem, elem_rows, strict=True)]
    row_w = [(x, w0[r] * _inv_rms(x)) for x, r in row_terms]
    col_w = [(x, w0[r] * _inv_rms(x)) for x, r in col_terms]

    def affine(terms, j):
        acc = terms[0][0] * terms[0][1][j]
        for x, w in terms[1:]:
            acc = acc + x * w[j]
        return acc

    h = []
    for j in range(w0.shape[1]):
        z = affine(elem_w, j) + bias0[j]
        if row_w:
            z = z + jnp.expand_dims(affine(row_w, j), d0) + jnp.expand_dims(affine(col_w, j), d1)
        h.append(z)

    n_layers = sum(1 for k in nn if k.startswith("w"))
    for layer in range(1, n_layers):
        h = [jax.nn.relu(x) for x in h]
        w, b = nn[f"w{layer}"], nn[f"b{layer}"]
        h = [affine([(x, w[i]) for i, x in enumerate(h)], j) + b[j] for j in range(w.shape[1])]
    return h[0], h[1]


@dataclasses.dataclass(frozen=True)
class AdafacMLPLOpt(LearnedOptimizer):
    """AdaFac-MLP-LOpt. Defaults are the reference factory's ``adafac_mlp``.

    Only the reference's default weight layout (``concat_weights=True``: one
    ``w{i}``/``b{i}`` pair per layer under ``nn/~``) is provided.
    """

    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    hidden_size: int = 4
    hidden_layers: int = 2
    initial_momentum_decays: tuple = (0.9, 0.99, 0.999)
    initial_rms_decays: tuple = (0.999,)
    initial_adafactor_decays: tuple = (0.9, 0.99, 0.999)

    needs_num_steps = True

    @property
    def name(self) -> str:
        return "adafac_mlp"

    @property
    def num_inputs(self) -> int:
        """Normalised channels (2 + 2·K_m + 2·K_r + 6·K_f = 28) plus 11 time features.

        The reference broadcasts momentum against the RMS and Adafactor decays,
        so it needs ``K_r = 1`` and ``K_f = K_m``.
        """
        k_m, k_r = len(self.initial_momentum_decays), len(self.initial_rms_decays)
        k_f = len(self.initial_adafactor_decays)
        return 2 + 2 * k_m + 2 * k_r + 6 * k_f + len(TIME_SCALES)

    def init(self, key):
        sizes = [self.num_inputs] + [self.hidden_size] * self.hidden_layers + [2]
        keys = jax.random.split(key, len(sizes) - 1)
        nn = {}
        for i, k in enumerate(keys):
            nn[f"w{i}"] = truncated_normal(k, (sizes[i], sizes[i + 1]), 1.0 / np.sqrt(sizes[i]))
            nn[f"b{i}"] = jnp.zeros((sizes[i + 1],), jnp.float32)
        zeros = lambda n: jnp.zeros((len(n),), jnp.float32)
        return {
            "momentum_decays": zeros(self.initial_momentum_decays),
            "rms_decays": zeros(self.initial_rms_decays),
            "adafactor_decays": zeros(self.initial_adafactor_decays),
            "nn": {"~": nn},
        }

    def init_state(self, theta, params, model_state, num_steps, key):
        del theta, key
        if num_steps is None:
            raise ValueError("adafac_mlp needs the training horizon: pass num_steps to init.")
        return AdafacMLPState(
            params=params,
            state=model_state,
            mom_rolling=rolling_mom_init(params, self.initial_momentum_decays),
            rms_rolling=rolling_rms_init(params, self.initial_rms_decays),
            fac_rolling_features=factored_init(params, self.initial_adafactor_decays),
            num_steps=jnp.asarray(num_steps, jnp.int32),
            iteration=jnp.asarray(0, jnp.int32),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del loss, is_valid, key
        mom_decay = learned_decay(self.initial_momentum_decays, theta["momentum_decays"])
        rms_decay = learned_decay(self.initial_rms_decays, theta["rms_decays"])
        fac_decay = learned_decay(self.initial_adafactor_decays, theta["adafactor_decays"])
        mom = rolling_mom_update(state.mom_rolling, grad, mom_decay)
        rms = rolling_rms_update(state.rms_rolling, grad, rms_decay)
        fac, fac_g = factored_update(state.fac_rolling_features, grad, fac_decay)
        time_feat = tanh_time_embedding(state.iteration)

        nn = theta["nn"]["~"]
        treedef = jax.tree_util.tree_structure(state.params)
        flat = [
            treedef.flatten_up_to(t)
            for t in (state.params, grad, mom.m, rms.rms, fac_g, fac.v_col, fac.v_row, fac.v_diag)
        ]
        new_leaves = [self._leaf_step(nn, time_feat, *args) for args in zip(*flat, strict=True)]
        return AdafacMLPState(
            params=jax.tree_util.tree_unflatten(treedef, new_leaves),
            state=model_state,
            mom_rolling=mom,
            rms_rolling=rms,
            fac_rolling_features=fac,
            num_steps=state.num_steps,
            iteration=state.iteration + 1,
        )

    def _leaf_step(self, nn, time_feat, p, g, m, rms, fac_g, v_col, v_row, v_diag):
        scalar = p.ndim == 0
        if scalar:  # the MLP needs at least one tensor axis
            p, g, m, rms, fac_g, v_diag = (x[None] for x in (p, g, m, rms, fac_g, v_diag))
        d, mu = mlp_step_outputs(nn, time_feat, p, g, m, rms, fac_g, v_col, v_row, v_diag)
        new_p = p - d * jnp.exp(mu * self.exp_mult) * self.step_mult
        return new_p[0] if scalar else new_p


def adafac_mlp(**kwargs) -> AdafacMLPLOpt:
    """AdaFac-MLP-LOpt with the reference factory's defaults."""
    return AdafacMLPLOpt(**kwargs)
