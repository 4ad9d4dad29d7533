"""Hand-designed baselines with the reference's defaults (spec §8).

Every factory takes ``learning_rate`` (the reference's ``--test_lr``, default
1e-3) and returns an :class:`~celo.optimizers.base.OptaxOptimizer`, i.e. the
lopt-style face over an optax transformation (``opt.tx``). Beyond the
reference: Shampoo (:mod:`celo.optimizers.shampoo`), Muon and schedule-free
AdamW (``optax.contrib``), which the paper's comparison set includes.
"""

from __future__ import annotations

import jax
import optax
import optax.contrib

from celo.optimizers.base import OptaxOptimizer
from celo.optimizers.shampoo import shampoo as _shampoo

DEFAULT_LR = 1e-3


def _make(name: str, tx: optax.GradientTransformation) -> OptaxOptimizer:
    return OptaxOptimizer(tx, name=name)


def _scalars_as_vectors(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run ``tx`` with shape-() leaves viewed as shape (1,), as the reference's SM3 does."""
    to_vec = lambda t: jax.tree_util.tree_map(lambda x: x.reshape(1) if x.ndim == 0 else x, t)

    def init_fn(params):
        return tx.init(to_vec(params))

    def update_fn(updates, state, params=None):
        new, state = tx.update(to_vec(updates), state, None if params is None else to_vec(params))
        new = jax.tree_util.tree_map(lambda n, u: n.reshape(u.shape), new, updates)
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def adam(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """learned_optimization's Adam: note ``eps_root = 1e-8``."""
    return _make("adam", optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=1e-8))


def sgd(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("sgd", optax.sgd(learning_rate))


def sgdm(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("sgdm", optax.sgd(learning_rate, momentum=0.9))


def adamw(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make(
        "adamw",
        optax.adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4),
    )


def rmsprop(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("rmsprop", optax.rmsprop(learning_rate, decay=0.9, eps=1e-8))


def fromage(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("fromage", optax.fromage(learning_rate, min_norm=1e-6))


def sm3(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """``scale_by_sm3(b1=0.9, b2=1.0)`` then ``scale(−lr)``; scalars handled as 1-D."""
    return _make("sm3", _scalars_as_vectors(optax.sm3(learning_rate, momentum=0.9)))


def lars(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make(
        "lars",
        optax.lars(learning_rate, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0, momentum=0.9),
    )


def lamb(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("lamb", optax.lamb(learning_rate, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0))


def adabelief(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make(
        "adabelief", optax.adabelief(learning_rate, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16)
    )


def adafactor(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make(
        "adafactor",
        optax.adafactor(
            learning_rate,
            min_dim_size_to_factor=128,
            decay_rate=0.8,
            multiply_by_parameter_scale=True,
            clipping_threshold=1.0,
        ),
    )


def adagrad(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("adagrad", optax.adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7))


def yogi(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("yogi", optax.yogi(learning_rate, b1=0.9, b2=0.999, eps=1e-3))


def radam(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    return _make("radam", optax.radam(learning_rate, b1=0.9, b2=0.999, eps=1e-8))


def nadamw(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """NAdamW: Nesterov momentum, bias correction, no weight decay (the reference default)."""
    return _make(
        "nadamw",
        optax.nadamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, nesterov=True),
    )


def shampoo(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """Shampoo with Adam grafting (:mod:`celo.optimizers.shampoo`)."""
    return _make("shampoo", _shampoo(learning_rate))


def muon(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """optax.contrib Muon: Newton–Schulz-orthogonalised momentum on matrices, Adam elsewhere."""
    return _make("muon", optax.contrib.muon(learning_rate))


def schedule_free_adamw(learning_rate: float = DEFAULT_LR) -> OptaxOptimizer:
    """optax.contrib schedule-free AdamW.

    The params it trains on are the interpolation point ``y``; for evaluation,
    ``optax.contrib.schedule_free_eval_params(state.optax_opt_state, params)`` gives ``x``.
    """
    return _make("schedule_free_adamw", optax.contrib.schedule_free_adamw(learning_rate))
