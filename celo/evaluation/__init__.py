"""Evaluation: training curves, tuned baselines, scores against tuned Adam, plots, AlgoPerf.

* :mod:`~celo.evaluation.inner_train` — one optimizer on one task → curves.
* :mod:`~celo.evaluation.specs` — ``NAME``, ``NAME=theta.state``, ``NAME=hf://repo``.
* :mod:`~celo.evaluation.benchmark` — :func:`evaluate`: plan, run (resumable), score, plot.
* :mod:`~celo.evaluation.scoring` — final-loss and speedup scores, rliable aggregates.
* :mod:`~celo.evaluation.plots` — curves, IQM bars, performance profiles.
* :mod:`~celo.evaluation.algoperf` — the AlgoPerf submission API and AlgoPerf-lite.

This package uses tasks and optimizers; it never imports meta-training.
"""

from celo.evaluation.benchmark import EvalSchedule, default_lrs, evaluate
from celo.evaluation.inner_train import Curve, CurveConfig, CurveRunner, train_curve
from celo.evaluation.scoring import aggregate, final_loss_score, speedup_score
from celo.evaluation.specs import DEFAULT_LR_GRID, OptimizerSpec, parse_optimizer

__all__ = [
    "DEFAULT_LR_GRID",
    "Curve",
    "CurveConfig",
    "CurveRunner",
    "EvalSchedule",
    "OptimizerSpec",
    "aggregate",
    "default_lrs",
    "evaluate",
    "final_loss_score",
    "parse_optimizer",
    "speedup_score",
    "train_curve",
]
