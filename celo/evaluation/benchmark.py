"""The evaluation benchmark: plan the cells, run them, score, tabulate and plot.

:func:`evaluate` is what ``celo evaluate`` calls. It is resumable: cells that
finished in an earlier run of the same folder are skipped, so rerunning the
same command after a crash or in a later session continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from celo.evaluation import executor, jobs, plots, report
from celo.evaluation.specs import DEFAULT_LR_GRID, OptimizerSpec, parse_optimizer
from celo.tracking import NoopTracker, Tracker

#: Default learning-rate grids per suite; ``velodrome17_small`` is a CI smoke run.
SUITE_LR_GRIDS: dict[str, tuple[float, ...]] = {
    "velodrome17_small": (1e-3, 1e-2),
}


def default_lrs(suite: str | None) -> tuple[float, ...]:
    """The learning-rate grid used when none is given: per suite, else half-decades 1e-5…1."""
    return SUITE_LR_GRIDS.get(suite or "", DEFAULT_LR_GRID)


def horizons(tasks: Sequence[str], suite: str | None, steps: int | None) -> dict[str, int]:
    """Steps per task: ``steps`` if given, else the suite's horizon, else the default (2,000)."""
    from celo.tasks import suites

    if steps is not None:
        return {t: int(steps) for t in tasks}
    table = {e.name: e.horizon for e in suites.get_suite_tasks(suite or "velodrome17")}
    return {t: table.get(t, suites.DEFAULT_HORIZON) for t in tasks}


def task_costs() -> dict[str, str]:
    from celo.tasks import suites

    return {e.name: e.cost for e in suites.get_suite_tasks("velodrome17")}


@dataclasses.dataclass(frozen=True)
class EvalSchedule:
    """How often and on how many batches runs are evaluated (spec §11.1)."""

    eval_every: int = 10
    eval_batches: int = 5
    last_eval_batches: int = 10


def plan(
    root: str,
    optimizers: Sequence[OptimizerSpec],
    tasks: Sequence[str],
    seeds: Sequence[int],
    steps: dict[str, int],
    schedule: EvalSchedule = EvalSchedule(),
    data_dir: str | None = None,
) -> list[jobs.Job]:
    """One job per (optimizer, task, seed), cheapest tasks first."""
    out = [
        jobs.Job(
            root,
            o,
            t,
            int(s),
            steps[t],
            schedule.eval_every,
            schedule.eval_batches,
            schedule.last_eval_batches,
            data_dir,
        )
        for t in tasks
        for o in optimizers
        for s in seeds
    ]
    return jobs.sort_jobs(out, task_costs())


def with_reference(
    optimizers: Sequence[OptimizerSpec], reference: str, lrs: Sequence[float]
) -> list[OptimizerSpec]:
    """The optimizers, plus the tuned reference if it is not among them."""
    out = list(optimizers)
    if reference not in [o.label for o in out]:
        out.append(parse_optimizer(reference, lrs))
    return out


def evaluate(
    optimizers: Sequence[OptimizerSpec],
    tasks: Sequence[str],
    seeds: Sequence[int],
    root: str,
    *,
    suite: str | None = None,
    steps: int | None = None,
    schedule: EvalSchedule = EvalSchedule(),
    workers: int = 1,
    reference: str = "adam",
    reference_lrs: Sequence[float] | None = None,
    data_dir: str | None = None,
    tracker: Tracker | None = None,
    progress: bool = True,
    make_plots: bool = True,
    reps: int = 2000,
    worker_env: dict[str, str] | None = None,
    report_only: bool = False,
    report_dir: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evaluation in ``root`` and write its results.

    Args:
      optimizers: what to evaluate (see :func:`~celo.evaluation.specs.parse_optimizer`).
      tasks: task names.
      seeds: seeds; curves are averaged over them before scoring.
      root: output folder (local or ``gs://``).
      suite: the suite the tasks come from (sets horizons and the default grid).
      steps: horizon for every task, overriding the suite's.
      schedule: evaluation schedule within each run.
      workers: worker processes (1: run in this process).
      reference: label of the tuned reference optimizer; added if missing.
      reference_lrs: its grid when it is added (default: the suite's grid).
      data_dir: data root for the tasks.
      tracker: receives per-task scores, the aggregates and the plots.
      progress: show a progress bar over cells.
      make_plots: write the PNG figures.
      reps: bootstrap repetitions for the confidence intervals.
      worker_env: environment for worker processes.
      report_only: run nothing; score the cells that have finished (safe while
        another process is still running cells in ``root``).
      report_dir: where summary.json, tables.md, the reference file and the
        plots go (default ``root``).

    Returns:
      The summary (also written to ``root/summary.json``).
    """
    tracker = tracker or NoopTracker()
    opts = with_reference(optimizers, reference, reference_lrs or default_lrs(suite))
    horizon = horizons(tasks, suite, steps)
    todo = plan(root, opts, tasks, seeds, horizon, schedule, data_dir)
    config = {
        "suite": suite,
        "tasks": list(tasks),
        "seeds": list(seeds),
        "steps": horizon,
        **dataclasses.asdict(schedule),
        "reference": reference,
        "optimizers": [o.to_json() for o in opts],
        "steps_note": "a run of N steps makes exactly N updates (the reference makes N+1)",
    }
    tracker.log_params(
        {
            "suite": suite,
            "tasks": ",".join(tasks),
            "seeds": ",".join(map(str, seeds)),
            "optimizers": ",".join(o.label for o in opts),
            "reference": reference,
        }
    )
    t0 = time.perf_counter()
    records = (
        []
        if report_only
        else executor.execute(todo, workers=workers, progress=progress, worker_env=worker_env)
    )
    summary = report.build_summary(root, opts, tasks, seeds, reference, config, reps=reps)
    summary["run"] = {
        "wall_seconds": time.perf_counter() - t0,
        "workers": workers,
        "cells": {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "error")},
        "errors": [r for r in records if r["status"] == "error"],
    }
    report.write_outputs(root, summary, opts, seeds, report_dir)
    paths = plots.make_all(root, summary, opts, seeds, reps, report_dir) if make_plots else []
    summary["plots"] = paths
    report.write_outputs(root, summary, opts, seeds, report_dir)
    _log(tracker, summary, paths)
    return summary


def _log(tracker: Tracker, summary: dict[str, Any], paths: Sequence[str]) -> None:
    metrics = {}
    for label, o in summary["optimizers"].items():
        for task, e in o["per_task"].items():
            for key in ("final_loss_score", "speedup_score", "final_loss", "seconds_per_step"):
                if e.get(key) is not None:
                    metrics[f"eval/{label}/{task}/{key}"] = e[key]
        for key in ("iqm_final_loss", "iqm_speedup", "median_final_loss", "median_speedup"):
            if key in o:
                metrics[f"eval/{label}/{key}"] = o[key]
    tracker.log_metrics(metrics)
    for p in paths:
        tracker.log_artifact(p, "plots")
