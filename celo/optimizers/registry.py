"""Name → factory registry of every optimizer (spec §2.1, plus the paper's extras).

Factories are referenced as ``"module:function"`` strings and imported on first
use, so importing the registry stays cheap. Hugging Face repository names
(``celo-adam``, ``rnn-mlp-lopt`` …) are accepted as aliases.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

LEARNED: dict[str, str] = {
    "celo_phase1": "celo.optimizers.celo:celo_phase1",
    "celo": "celo.optimizers.celo:celo",
    "celo_adam": "celo.optimizers.celo_adam:celo_adam",
    "rnn_mlp": "celo.optimizers.rnn_mlp:rnn_mlp",
    "adafac_mlp": "celo.optimizers.adafac_mlp:adafac_mlp",
    "velo_s": "celo.optimizers.velo:velo_s",
    "velo": "celo.optimizers.velo:velo",
    "velo_4000": "celo.optimizers.velo:velo_4000",
    "nnadam": "celo.optimizers.nn_adam:nnadam",
    "celo2": "celo.optimizers.celo2:celo2",
    "celo2base": "celo.optimizers.celo2:celo2base",
}

HANDCRAFTED: dict[str, str] = {
    name: f"celo.optimizers.baselines:{name}"
    for name in (
        "adam",
        "sgd",
        "sgdm",
        "adamw",
        "rmsprop",
        "fromage",
        "sm3",
        "lars",
        "lamb",
        "adabelief",
        "adafactor",
        "adagrad",
        "yogi",
        "radam",
        "nadamw",
        # Beyond the reference: baselines the paper compares against.
        "shampoo",
        "muon",
        "schedule_free_adamw",
    )
}

#: Hugging Face repository names and other spellings → registry names.
ALIASES: dict[str, str] = {
    "rnn_mlp_lopt": "rnn_mlp",
    "adafac_mlp_lopt": "adafac_mlp",
    "celo2_base": "celo2base",
    "sfadamw": "schedule_free_adamw",
    "schedule_free": "schedule_free_adamw",
}


class UnknownOptimizerError(ValueError):
    """Raised for a name that is not in the registry; the message lists valid names."""


def names(kind: str | None = None) -> list[str]:
    """Registered names: ``kind`` is None (all), ``"learned"`` or ``"handcrafted"``."""
    if kind == "learned":
        return list(LEARNED)
    if kind == "handcrafted":
        return list(HANDCRAFTED)
    return list(LEARNED) + list(HANDCRAFTED)


def canonical_name(name: str) -> str:
    """Normalise hyphens and aliases; raise :class:`UnknownOptimizerError` if unknown."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key in LEARNED or key in HANDCRAFTED:
        return key
    close = difflib.get_close_matches(key, names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownOptimizerError(
        f"unknown optimizer {name!r}.{hint} Valid names: learned: {', '.join(LEARNED)}; "
        f"hand-designed: {', '.join(HANDCRAFTED)}."
    )


def is_learned(name: str) -> bool:
    return canonical_name(name) in LEARNED


def _load(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def get_optimizer(name: str, **kwargs: Any):
    """A LearnedOptimizer for learned names, an Optimizer for hand-designed ones.

    Keyword arguments go to the factory: e.g. ``learning_rate`` for the
    hand-designed optimizers (default 1e-3, the reference's ``--test_lr``).
    """
    key = canonical_name(name)
    return _load(LEARNED.get(key) or HANDCRAFTED[key])(**kwargs)
