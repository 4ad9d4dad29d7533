"""Optimizer protocols, in two faces over one implementation.

* The lopt-style face of learned_optimization, which users of the reference
  code already write: ``opt.init(params, model_state=None, num_steps=None,
  key=None)`` returns a state that carries the params, ``opt.update(state,
  grad, loss=None, ...)`` returns the next state, and ``opt.get_params(state)``
  reads them back. A :class:`LearnedOptimizer` has ``init(key) -> theta`` and
  ``opt_fn(theta) -> Optimizer``.
* The optax face: :func:`as_optax` turns any :class:`Optimizer` into an
  ``optax.GradientTransformationExtraArgs`` that takes ``loss`` (and optionally
  ``num_steps``, ``model_state`` and ``key``) as extra arguments.

Learned optimizers are frozen dataclasses: their configuration is hashable and
static under ``jax.jit``, while theta is always a traced argument. A new theta
therefore never triggers a recompilation, and a theta traced by an outer
transformation (PES perturbations under ``vmap``) flows straight through.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

Params = Any
ModelState = Any
OptState = Any
MetaParams = Any


class Optimizer(abc.ABC):
    """An inner optimizer whose state carries the parameters."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def init(
        self,
        params: Params,
        model_state: ModelState = None,
        num_steps: int | jnp.ndarray | None = None,
        key: jax.Array | None = None,
    ) -> OptState:
        """Build the optimizer state for ``params``."""

    @abc.abstractmethod
    def update(
        self,
        opt_state: OptState,
        grad: Params,
        loss: jnp.ndarray | None = None,
        model_state: ModelState = None,
        is_valid: bool = False,
        key: jax.Array | None = None,
    ) -> OptState:
        """Apply one update and return the next state."""

    def get_params(self, state: OptState) -> Params:
        return state.params

    def get_state(self, state: OptState) -> ModelState:
        return state.state

    def get_params_state(self, state: OptState) -> tuple[Params, ModelState]:
        return self.get_params(state), self.get_state(state)

    def set_params(self, state: OptState, params: Params) -> OptState:
        return state.replace(params=params)

    def as_optax(self, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
        """The optax face of this optimizer; see :func:`as_optax`."""
        return as_optax(self, num_steps=num_steps)


class LearnedOptimizer(abc.ABC):
    """A family of optimizers indexed by meta-parameters ``theta``.

    Subclasses are frozen dataclasses (hashable configuration) and implement
    :meth:`init`, :meth:`init_state` and :meth:`update_state` as pure
    functions; :meth:`opt_fn` binds a theta into an :class:`Optimizer`.
    """

    #: Whether ``init`` needs the training horizon ``num_steps``.
    needs_num_steps: bool = False
    #: Whether ``update`` needs the training loss.
    needs_loss: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @abc.abstractmethod
    def init(self, key: jax.Array) -> MetaParams:
        """Sample meta-parameters with the reference's layout and shapes."""

    @abc.abstractmethod
    def init_state(self, theta, params, model_state, num_steps, key) -> OptState:
        """Pure init; ``num_steps`` may be a traced scalar."""

    @abc.abstractmethod
    def update_state(self, theta, state, grad, loss, model_state, is_valid, key) -> OptState:
        """Pure update; returns a state with the same structure and dtypes."""

    def get_frozen_param_keys(self) -> list[str] | None:
        """Substrings of theta leaf paths frozen under ``--train_partial``; None if unsupported."""
        return None

    def opt_fn(self, theta: MetaParams, is_training: bool = False) -> Optimizer:
        """Bind ``theta``; ``is_training`` is accepted for API parity and ignored."""
        del is_training
        return LearnedOptimizerInstance(self, theta)


@functools.partial(jax.jit, static_argnums=(0,))
def _lopt_init(lopt, theta, params, model_state, num_steps, key):
    return lopt.init_state(theta, params, model_state, num_steps, key)


@functools.partial(jax.jit, static_argnums=(0,))
def _lopt_update(lopt, theta, state, grad, loss, model_state, is_valid, key):
    new_state = lopt.update_state(theta, state, grad, loss, model_state, is_valid, key)
    return match_type(new_state, state)


def strong_types(tree):
    """Drop JAX's weak types (e.g. from Python scalars) so jit caches stay warm."""
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype=x.dtype) if getattr(x, "weak_type", False) else x, tree
    )


def match_type(new, old):
    """Cast ``new`` leaf-wise to the dtypes of ``old`` (keeps jit caches warm)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.asarray(n, dtype=jnp.asarray(o).dtype), new, old)


class LearnedOptimizerInstance(Optimizer):
    """An :class:`Optimizer` that has captured a theta."""

    def __init__(self, lopt: LearnedOptimizer, theta: MetaParams):
        self.lopt = lopt
        self.theta = theta

    @property
    def name(self) -> str:
        return self.lopt.name

    def init(self, params, model_state=None, num_steps=None, key=None):
        if num_steps is None and self.lopt.needs_num_steps:
            raise ValueError(
                f"{self.lopt.name} needs the training horizon: call "
                "init(params, num_steps=N) with the number of steps you will train for."
            )
        if num_steps is not None:
            num_steps = jnp.asarray(num_steps, dtype=jnp.int32)
        return _lopt_init(self.lopt, self.theta, strong_types(params), model_state, num_steps, key)

    def update(self, opt_state, grad, loss=None, model_state=None, is_valid=False, key=None):
        if loss is None and self.lopt.needs_loss:
            raise ValueError(
                f"{self.lopt.name} needs the training loss: call update(state, grad, loss=loss)."
            )
        if loss is not None:
            loss = jnp.asarray(loss, dtype=jnp.float32)
        is_valid = jnp.asarray(is_valid, dtype=jnp.bool_)
        return _lopt_update(
            self.lopt, self.theta, opt_state, strong_types(grad), loss, model_state, is_valid, key
        )


@flax.struct.dataclass
class OptaxState:
    """State of a hand-designed optimizer in the lopt-style face."""

    params: Params
    state: ModelState
    optax_opt_state: Any
    iteration: jnp.ndarray


class OptaxOptimizer(Optimizer):
    """The lopt-style face over an optax transformation (spec §2.6).

    The loss is accepted and ignored unless the transformation declares extra
    arguments, in which case it is forwarded as ``value``/``loss``.
    """

    def __init__(self, tx: optax.GradientTransformation, name: str = "optax"):
        self.tx = optax.with_extra_args_support(tx)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def __hash__(self):
        return id(self)

    def init(self, params, model_state=None, num_steps=None, key=None):
        del num_steps, key
        return _optax_init(self, strong_types(params), model_state)

    def update(self, opt_state, grad, loss=None, model_state=None, is_valid=False, key=None):
        del is_valid, key
        if loss is not None:
            loss = jnp.asarray(loss, dtype=jnp.float32)
        return _optax_update(self, opt_state, strong_types(grad), loss, model_state)


@functools.partial(jax.jit, static_argnums=(0,))
def _optax_init(opt: OptaxOptimizer, params, model_state):
    return OptaxState(
        params=params,
        state=model_state,
        optax_opt_state=opt.tx.init(params),
        iteration=jnp.asarray(0, jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=(0,))
def _optax_update(opt: OptaxOptimizer, opt_state: OptaxState, grad, loss, model_state):
    extra = {} if loss is None else {"value": loss, "loss": loss}
    updates, new_inner = opt.tx.update(grad, opt_state.optax_opt_state, opt_state.params, **extra)
    params = optax.apply_updates(opt_state.params, updates)
    new_state = OptaxState(
        params=params,
        state=model_state,
        optax_opt_state=new_inner,
        iteration=opt_state.iteration + 1,
    )
    return match_type(new_state, opt_state)


class OptaxAdapterState(NamedTuple):
    """State of :func:`as_optax`: the wrapped optimizer's lopt-style state."""

    inner: Any


def as_optax(opt: Optimizer, num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
    """Wrap an :class:`Optimizer` as ``optax.GradientTransformationExtraArgs``.

    Args:
      opt: any optimizer with the lopt-style face (learned or hand-designed).
      num_steps: the training horizon handed to ``opt.init``; learned optimizers
        that condition on training progress (Celo, VeLO) require it.

    The returned ``update(grads, state, params, *, loss=None, num_steps=None,
    model_state=None, key=None)`` reads the current params from the optax loop,
    applies one step and returns ``new_params - params`` as the update.
    ``num_steps`` overrides the progress horizon stored in the state (the
    loss-trend half-lives stay those chosen at ``init``).
    """

    def init_fn(params):
        return OptaxAdapterState(inner=opt.init(params, num_steps=num_steps))

    def update_fn(
        updates,
        state,
        params=None,
        *,
        loss=None,
        num_steps=None,
        model_state=None,
        key=None,
        **extra,
    ):
        del extra
        inner = state.inner
        if params is None:
            params = opt.get_params(inner)
        else:
            inner = opt.set_params(inner, params)
        if num_steps is not None:
            if not hasattr(inner, "num_steps"):
                raise ValueError(f"{opt.name} has no training horizon to override")
            inner = inner.replace(
                num_steps=jnp.asarray(num_steps, jnp.asarray(inner.num_steps).dtype)
            )
        new_inner = opt.update(inner, updates, loss=loss, model_state=model_state, key=key)
        new_params = opt.get_params(new_inner)
        step = jax.tree_util.tree_map(lambda n, p: n - p, new_params, params)
        return step, OptaxAdapterState(inner=new_inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
