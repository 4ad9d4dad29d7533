"""Celo2 and Celo2-base: a learned per-parameter MLP direction, no scheduler (spec §14).

Per tensor the MLP (Celo's input groups with Celo2's epsilons, hidden 8×2)
proposes a direction ``d``; Celo2 orthogonalises it with Newton–Schulz when the
tensor is a matrix, the result is RMS-normalised over the last two axes, and

    p ← p − step_mult·step − weight_decay·step_mult·p.

The step size comes only from ``step_mult``: there is no LSTM and no loss or
progress input. Celo2-base runs the rule on every tensor; Celo2 sends tensors
whose path matches ``regex_1d`` (the factory's ``/b$``: biases) to a plain Adam
at ``mult_1d × step_mult`` and orthogonalises the rest.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from celo.lopt import (
    FactoredAccum,
    MomAccumulator,
    RmsAccumulator,
    factored_init,
    factored_update,
    rolling_mom_init,
    rolling_mom_update,
    rolling_rms_init,
    rolling_rms_update,
    second_moment_normalizer,
)
from celo.lopt.ff_mlp import mlp_outputs, stack_w0
from celo.lopt.newton_schulz import NS_COEFFS, newton_schulz
from celo.optimizers.base import LearnedOptimizer
from celo.optimizers.celo import init_ff_mod

#: Celo2 normalises inputs and output over this many trailing axes, with this ε.
_NORM_AXES = 2
_NORM_EPS = 1e-9


@flax.struct.dataclass
class Celo2RuleState:
    """Accumulators of the learned rule (the reference's ``Celo2State``)."""

    rms_rolling: RmsAccumulator
    mom_rolling: MomAccumulator
    fac_rolling: FactoredAccum
    iteration: jnp.ndarray


@flax.struct.dataclass
class AdamState:
    """Accumulators of Celo2's Adam branch."""

    rms_rolling: RmsAccumulator
    mom_rolling: MomAccumulator
    iteration: jnp.ndarray


@flax.struct.dataclass
class Celo2BaseState:
    """Inner state of Celo2-base; fields follow the reference's ``Celo2BaseLoptState``."""

    params: Any
    rms_rolling: RmsAccumulator
    mom_rolling: MomAccumulator
    fac_rolling: FactoredAccum
    iteration: jnp.ndarray
    state: Any
    step_mult: jnp.ndarray


@flax.struct.dataclass
class Celo2State:
    """Inner state of Celo2: leaves routed to Adam live in ``state_1d``, the rest in ``state_2d``.

    Each sub-state holds the full parameter tree with ``None`` at the leaves
    routed to the other branch.
    """

    params: Any
    state_1d: AdamState
    state_2d: Celo2RuleState
    state: Any
    step_mult: jnp.ndarray
    step_mult_1d: jnp.ndarray


def _bias_correct(x: jnp.ndarray, decays: tuple, count: jnp.ndarray) -> jnp.ndarray:
    """``x / (1 − β^count)`` per trailing decay."""
    d = jnp.asarray(decays, jnp.float32)
    return x / (1 - d**count).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Celo2Base(LearnedOptimizer):
    """The learned Celo2 rule on every tensor; defaults are the reference's ``celo2base``.

    Attributes:
      ff_hidden_size, ff_hidden_layers: shape of the per-parameter MLP.
      initial_momentum_decays, initial_rms_decays, initial_adafactor_decays:
        fixed accumulator decays.
      exp_mult: the magnitude output enters as ``exp(exp_mult·μ)``; 0 ignores it.
      step_mult: learning rate of the rule (kept as a float32 in the state).
      rmsmult: scale applied after the RMS normalisation of the step.
      weight_decay: decoupled, scaled by ``step_mult`` like the step.
      bias_correction: divide m, rms and the factored statistics by ``1 − β^t``.
      orthogonalize: Newton–Schulz on the step of every tensor of rank ≥ 2.
      ns_coeffs, ns_iters, ns_eps: the Newton–Schulz iteration.
    """

    ff_hidden_size: int = 8
    ff_hidden_layers: int = 2
    initial_momentum_decays: tuple = (0.9, 0.99, 0.999)
    initial_rms_decays: tuple = (0.95,)
    initial_adafactor_decays: tuple = (0.9, 0.99, 0.999)
    exp_mult: float = 0.0
    step_mult: float = 1e-3
    rmsmult: float = 1.0
    weight_decay: float = 0.0
    bias_correction: bool = False
    orthogonalize: bool = False
    ns_coeffs: tuple = NS_COEFFS
    ns_iters: int = 5
    ns_eps: float = 1e-8

    @property
    def name(self) -> str:
        return "celo2base"

    def init(self, key):
        key1, _ = jax.random.split(key)
        return {"ff_mod_stack": init_ff_mod(key1, self.ff_hidden_size, self.ff_hidden_layers)}

    def init_state(self, theta, params, model_state, num_steps, key):
        del theta, num_steps, key
        rule = self._rule_init(params)
        return Celo2BaseState(
            params=params,
            rms_rolling=rule.rms_rolling,
            mom_rolling=rule.mom_rolling,
            fac_rolling=rule.fac_rolling,
            iteration=rule.iteration,
            state=model_state,
            step_mult=jnp.asarray(self.step_mult, jnp.float32),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del loss, is_valid, key
        rule = Celo2RuleState(
            rms_rolling=state.rms_rolling,
            mom_rolling=state.mom_rolling,
            fac_rolling=state.fac_rolling,
            iteration=state.iteration,
        )
        step, rule = self._rule_update(theta, rule, state.params, grad)
        return Celo2BaseState(
            params=self._apply(state.params, step, state.step_mult),
            rms_rolling=rule.rms_rolling,
            mom_rolling=rule.mom_rolling,
            fac_rolling=rule.fac_rolling,
            iteration=rule.iteration,
            state=model_state,
            step_mult=state.step_mult,
        )

    def _apply(self, params, step, step_mult):
        wd = self.weight_decay
        return jax.tree_util.tree_map(
            lambda p, s: p - step_mult * s - wd * p * step_mult, params, step
        )

    def _rule_init(self, params) -> Celo2RuleState:
        return Celo2RuleState(
            rms_rolling=rolling_rms_init(params, self.initial_rms_decays),
            mom_rolling=rolling_mom_init(params, self.initial_momentum_decays),
            fac_rolling=factored_init(params, self.initial_adafactor_decays),
            iteration=jnp.asarray(0, jnp.int32),
        )

    def _rule_update(self, theta, rule: Celo2RuleState, params, grad):
        """Accumulators and the learned step for ``params`` (leaves may be None)."""
        iteration = optax.safe_increment(rule.iteration)
        grad = jax.tree_util.tree_map(lambda g: jnp.clip(g, -1000.0, 1000.0), grad)
        mom = rolling_mom_update(rule.mom_rolling, grad, self.initial_momentum_decays)
        rms = rolling_rms_update(rule.rms_rolling, grad, self.initial_rms_decays)
        fac, fac_g = factored_update(rule.fac_rolling, grad, self.initial_adafactor_decays)
        m, v, v_col, v_row = mom.m, rms.rms, fac.v_col, fac.v_row
        if self.bias_correction:
            fix = lambda decays: lambda x: _bias_correct(x, decays, iteration)  # noqa: E731
            m = jax.tree_util.tree_map(fix(self.initial_momentum_decays), m)
            v = jax.tree_util.tree_map(fix(self.initial_rms_decays), v)
            v_col = jax.tree_util.tree_map(fix(self.initial_adafactor_decays), v_col)
            v_row = jax.tree_util.tree_map(fix(self.initial_adafactor_decays), v_row)

        ff = theta["ff_mod_stack"]["~"]
        weights = {k: ff[k] for k in ("b0", "w1", "b1", "w2", "b2")}
        weights["w0"] = stack_w0(ff)
        step = jax.tree_util.tree_map(
            lambda *a: self._direction(weights, *a), params, grad, m, v, fac_g, v_col, v_row
        )
        new_rule = Celo2RuleState(
            rms_rolling=rms, mom_rolling=mom, fac_rolling=fac, iteration=iteration
        )
        return step, new_rule

    def _direction(self, weights, p, g, m, rms, fac_g, v_col, v_row):
        """The normalised (and, for matrices, orthogonalised) step of one tensor."""
        scalar = p.ndim == 0
        if scalar:
            p, g, m, rms, fac_g = (x[None] for x in (p, g, m, rms, fac_g))
        # Non-factored tensors carry no v_diag input in Celo2: groups 9–13 are dropped.
        d, mu = mlp_outputs(
            weights,
            p,
            g,
            m,
            rms,
            fac_g,
            v_col,
            v_row,
            None,
            rsqrt_eps=1e-8,
            norm_eps=_NORM_EPS,
            norm_last_axes=_NORM_AXES,
            vector_fac_groups=False,
        )
        step = d * jnp.exp(mu * self.exp_mult)
        if self.orthogonalize and step.ndim >= 2:
            step = newton_schulz(step, self.ns_coeffs, self.ns_iters, self.ns_eps)
        axes = tuple(range(step.ndim))[-_NORM_AXES:]
        step = second_moment_normalizer(step, axis=axes, eps=_NORM_EPS) * self.rmsmult
        return step[0] if scalar else step


@dataclasses.dataclass(frozen=True)
class Celo2(Celo2Base):
    """Celo2: Adam on tensors matching ``regex_1d``, the orthogonalised rule elsewhere.

    Class defaults are the reference class's; its factory, :func:`celo2`,
    overrides ``regex_1d`` (``"/b$"``) and ``adam_b2`` (0.95).

    Attributes:
      regex_1d: tensors whose slash-joined path (``mlp/~/linear_0/b``) matches
        it (``re.search``) use Adam; empty routes every tensor to the rule.
      adam_b1, adam_b2, adam_epsilon: Adam's decays and its ε, which sits
        inside the square root: ``m / sqrt(v + ε)``.
      adam_bias_correction: bias-correct Adam's moments.
      mult_1d: Adam's learning rate is ``mult_1d · step_mult``.
    """

    regex_1d: str = r".*bias.*|.*embed.*"
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_epsilon: float = 1e-8
    adam_bias_correction: bool = False
    mult_1d: float = 20.0
    orthogonalize: bool = True

    @property
    def name(self) -> str:
        return "celo2"

    def init_state(self, theta, params, model_state, num_steps, key):
        del theta, num_steps, key
        params_1d, params_2d = self._split(params, params)
        step_mult = jnp.asarray(self.step_mult, jnp.float32)
        return Celo2State(
            params=params,
            state_1d=AdamState(
                rms_rolling=rolling_rms_init(params_1d, (self.adam_b2,)),
                mom_rolling=rolling_mom_init(params_1d, (self.adam_b1,)),
                iteration=jnp.asarray(0, jnp.int32),
            ),
            state_2d=self._rule_init(params_2d),
            state=model_state,
            step_mult=step_mult,
            step_mult_1d=step_mult * jnp.asarray(self.mult_1d, jnp.float32),
        )

    def update_state(self, theta, state, grad, loss, model_state, is_valid, key):
        del loss, is_valid, key
        params_1d, params_2d = self._split(state.params, state.params)
        grad_1d, grad_2d = self._split(grad, state.params)
        step_1d, state_1d = self._adam_update(state.state_1d, grad_1d)
        step_2d, state_2d = self._rule_update(theta, state.state_2d, params_2d, grad_2d)

        wd = self.weight_decay
        new_1d = jax.tree_util.tree_map(
            lambda p, s: p - state.step_mult_1d * s - wd * p * state.step_mult_1d,
            params_1d,
            step_1d,
        )
        new_2d = self._apply(params_2d, step_2d, state.step_mult)
        return Celo2State(
            params=self._merge(new_1d, new_2d, state.params),
            state_1d=state_1d,
            state_2d=state_2d,
            state=model_state,
            step_mult=state.step_mult,
            step_mult_1d=state.step_mult_1d,
        )

    def _adam_update(self, adam: AdamState, grad):
        iteration = optax.safe_increment(adam.iteration)
        mom = rolling_mom_update(adam.mom_rolling, grad, (self.adam_b1,))
        rms = rolling_rms_update(adam.rms_rolling, grad, (self.adam_b2,))
        m, v = mom.m, rms.rms
        if self.adam_bias_correction:
            m = jax.tree_util.tree_map(lambda x: _bias_correct(x, (self.adam_b1,), iteration), m)
            v = jax.tree_util.tree_map(lambda x: _bias_correct(x, (self.adam_b2,), iteration), v)
        step = jax.tree_util.tree_map(
            lambda m, v: (m * jax.lax.rsqrt(v + self.adam_epsilon))[..., 0], m, v
        )
        return step, AdamState(rms_rolling=rms, mom_rolling=mom, iteration=iteration)

    def routes_to_adam(self, params) -> list[bool]:
        """Per leaf (in flattening order): whether ``regex_1d`` sends it to Adam."""
        pairs = jax.tree_util.tree_leaves_with_path(params)
        if not self.regex_1d:
            return [False] * len(pairs)
        pattern = re.compile(self.regex_1d)
        return [bool(pattern.search(_path_str(path))) for path, _ in pairs]

    def _split(self, tree, params):
        """``(tree_1d, tree_2d)``: ``tree`` with None at the other branch's leaves."""
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        mask = self.routes_to_adam(params)
        return (
            treedef.unflatten([x if m else None for x, m in zip(leaves, mask, strict=True)]),
            treedef.unflatten([None if m else x for x, m in zip(leaves, mask, strict=True)]),
        )

    def _merge(self, tree_1d, tree_2d, params):
        is_none = lambda x: x is None  # noqa: E731
        flat_1d = jax.tree_util.tree_leaves(tree_1d, is_leaf=is_none)
        flat_2d = jax.tree_util.tree_leaves(tree_2d, is_leaf=is_none)
        mask = self.routes_to_adam(params)
        merged = [a if m else b for a, b, m in zip(flat_1d, flat_2d, mask, strict=True)]
        return jax.tree_util.tree_structure(params).unflatten(merged)


def _path_str(path) -> str:
    """``mlp/~/linear_0/b`` for a dict path (other keys as JAX prints them)."""
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def celo2base(**kwargs) -> Celo2Base:
    """Celo2-base: the learned rule, without orthogonalisation, on every tensor."""
    return Celo2Base(**kwargs)


def celo2(**kwargs) -> Celo2:
    """Celo2 as the reference factory builds it.

    Biases (``/b$``) go to Adam with ``b2 = 0.95`` (not the class default
    0.999) at 20 × ``step_mult``; every other tensor gets the orthogonalised rule.
    """
    return Celo2(**{"regex_1d": "/b$", "adam_b2": 0.95, **kwargs})
