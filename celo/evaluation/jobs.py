"""Evaluation jobs: one (optimizer, task, seed) with all its learning rates.

A job compiles its training step once and then runs each of its cells (one
per learning rate, or one for a learned optimizer's theta), skipping cells
that already finished. Jobs are plain JSON so that worker processes can
receive them on a pipe (see :mod:`celo.evaluation.executor`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from celo.evaluation import cells, specs
from celo.evaluation.inner_train import CurveConfig, CurveRunner

log = logging.getLogger(__name__)

#: Order in which tasks are run: cheapest first (cost classes of ``celo.tasks.suites``).
COST_ORDER = {"tiny": 0, "small": 1, "medium": 2, "large": 3}

#: Evaluation batches of seed s are drawn with data seed s + this offset.
EVAL_SEED_OFFSET = 10_000

#: ``on_cell(cell, status, info)`` with status ``done``, ``skipped`` or ``error``.
CellCallback = Callable[[cells.Cell, str, dict[str, Any]], None]

#: ``on_progress(cell, steps_done, steps)`` while a cell trains.
ProgressCallback = Callable[[cells.Cell, int, int], None]


@dataclasses.dataclass(frozen=True)
class Job:
    """All cells of one optimizer on one task and seed.

    Attributes:
      root: the evaluation folder.
      spec: the optimizer.
      task: task registry name.
      seed: seed of init, loss keys and data order.
      steps: updates per run.
      eval_every, eval_batches, last_eval_batches: the evaluation schedule.
      data_dir: data root for the task loaders (None: the default resolution).
    """

    root: str
    spec: specs.OptimizerSpec
    task: str
    seed: int
    steps: int
    eval_every: int = 10
    eval_batches: int = 5
    last_eval_batches: int = 10
    data_dir: str | None = None

    def cells(self) -> list[cells.Cell]:
        return [cells.Cell(self.spec.label, self.task, self.seed, t) for t in self.spec.tags()]

    def curve_config(self) -> CurveConfig:
        return CurveConfig(
            self.steps, self.eval_every, self.eval_batches, self.last_eval_batches, self.seed
        )

    def provenance(self, tag: str, digest: str | None) -> dict[str, Any]:
        """What a finished cell must match to be reused on resume."""
        out = {
            "optimizer": self.spec.name,
            "steps": self.steps,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "last_eval_batches": self.last_eval_batches,
        }
        if digest is not None:
            out["checkpoint_sha256"] = digest
        else:
            out["tag"] = tag
        return out

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        d = dict(d)
        d["spec"] = specs.OptimizerSpec.from_json(d["spec"])
        return cls(**d)


def pending(job: Job) -> list[cells.Cell]:
    """Cells of ``job`` that have not finished (raises on a configuration mismatch)."""
    digest = specs.checkpoint_digest(job.spec.checkpoint) if job.spec.learned else None
    return [c for c in job.cells() if not cells.is_done(job.root, c, job.provenance(c.tag, digest))]


def run_job(
    job: Job, on_cell: CellCallback | None = None, on_progress: ProgressCallback | None = None
) -> None:
    """Run every unfinished cell of ``job`` in this process.

    ``on_cell`` hears how each cell ended; ``on_progress`` hears the training
    steps of the running cell after every chunk of ``job.eval_every`` updates.
    """
    from celo.tasks import get_task

    on_cell = on_cell or (lambda *a: None)
    try:
        digest = specs.checkpoint_digest(job.spec.checkpoint) if job.spec.learned else None
        todo = []
        for cell in job.cells():
            if cells.is_done(job.root, cell, job.provenance(cell.tag, digest)):
                on_cell(cell, "skipped", {})
            else:
                todo.append(cell)
        if not todo:
            return
        build_opt, hps = specs.build(job.spec)
        task = get_task(job.task, data_dir=job.data_dir, seed=job.seed)
        runner = CurveRunner(task, build_opt, job.curve_config())
    except cells.ConfigMismatchError:
        raise
    except Exception as e:  # a task or checkpoint that cannot be built fails all its cells
        for cell in job.cells():
            on_cell(
                cell,
                "error",
                {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()},
            )
        return
    for cell in todo:
        try:
            # Fresh copies of the task's data for every cell: each learning rate
            # sees the same batches in the same order. Evaluations draw from their
            # own copy (another seed), so they never consume training batches.
            data = get_task(job.task, data_dir=job.data_dir, seed=job.seed).datasets
            evals = get_task(job.task, data_dir=job.data_dir, seed=job.seed + EVAL_SEED_OFFSET)
            t0 = time.perf_counter()
            report = None if on_progress is None else functools.partial(on_progress, cell)
            curve = runner.run(hps[cell.tag], data, evals.datasets, on_progress=report)
            info = {
                "provenance": job.provenance(cell.tag, digest),
                "optimizer": job.spec.to_json(),
                "summary": curve.summary(),
                "wall_seconds": time.perf_counter() - t0,
            }
            cells.save_cell(job.root, cell, curve.arrays(), info)
            on_cell(cell, "done", info)
        except Exception as e:
            log.exception("cell %s failed", cell)
            on_cell(
                cell,
                "error",
                {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()},
            )


def sort_jobs(jobs: list[Job], costs: dict[str, str]) -> list[Job]:
    """Cheapest tasks first, then in the given order (stable)."""
    return sorted(jobs, key=lambda j: COST_ORDER.get(costs.get(j.task, "medium"), 2))
