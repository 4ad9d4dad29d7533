"""Meta-training: truncated PES (and FullES) over augmented task families (spec §10).

Layers, from pure to impure:

* :mod:`~celo.meta.schedules` — truncation schedules (horizons, resets).
* :mod:`~celo.meta.batches` — training splits held on the device, batches gathered in-graph.
* :mod:`~celo.meta.groups` — families that can share one compiled unroll.
* :mod:`~celo.meta.truncated_step` — the vectorised unroll of ``[F, N, 2]`` inner problems.
* :mod:`~celo.meta.pes` — estimator math (perturbations, PES windows, antithetic ES).
* :mod:`~celo.meta.estimators` — ``TruncatedPES`` and ``FullES`` over one family group,
  sharded over devices.
* :mod:`~celo.meta.learner` — aggregation, frozen keys and the AdamW outer update.
* :mod:`~celo.meta.configs` — ``TrainConfig``, presets and validation.
* :mod:`~celo.meta.checkpointing` — theta checkpoints, the resumable trainer state.
* :mod:`~celo.meta.trainer` — the loop (the only impure module).
"""

from celo.meta.configs import PRESETS, ConfigError, TrainConfig, phase1, phase2, smoke, validate
from celo.meta.estimators import FullES, TruncatedPES
from celo.meta.learner import LearnerState, MetaLearner
from celo.meta.schedules import (
    ConstantTruncationSchedule,
    LogUniformLengthSchedule,
    NeverEndingTruncationSchedule,
)
from celo.meta.truncated_step import UnrollOut, UnrollState, VectorizedTruncatedStep

__all__ = [
    "PRESETS",
    "ConfigError",
    "ConstantTruncationSchedule",
    "FullES",
    "LearnerState",
    "LogUniformLengthSchedule",
    "MetaLearner",
    "NeverEndingTruncationSchedule",
    "TrainConfig",
    "TruncatedPES",
    "UnrollOut",
    "UnrollState",
    "VectorizedTruncatedStep",
    "phase1",
    "phase2",
    "smoke",
    "validate",
]
