"""Turn the finished cells of an evaluation folder into scores, tables and files.

Reads ``DIR/cells`` (see :mod:`celo.evaluation.cells`), picks each tuned
optimizer's learning rate per task, scores every optimizer against the tuned
reference (Adam) and writes::

    DIR/summary.json                        # scores, IQMs with CIs, timings, what is missing
    DIR/reference_<label>.json              # the tuned reference: chosen LR and the whole sweep
    DIR/curves/<label>/<task>/seed_<s>.npz  # the chosen curve of each (optimizer, task, seed)
    DIR/tables.md                           # per-task and aggregate tables
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from celo import storage
from celo.evaluation import cells, scoring
from celo.evaluation.specs import OptimizerSpec


@dataclasses.dataclass
class TaskResult:
    """One optimizer on one task: the chosen run and its sweep."""

    tag: str | None
    seeds: list[int]
    smoothed: np.ndarray | None
    sweep: dict[str, float | None]
    diverged: bool
    seconds_per_step: float | None
    compile_seconds: float | None


def _task_result(root: str, spec: OptimizerSpec, task: str, seeds: Sequence[int]) -> TaskResult:
    finals: dict[str, float] = {}
    sweep: dict[str, float | None] = {}
    curves: dict[str, list[np.ndarray]] = {}
    infos: dict[str, list[dict]] = {}
    for tag in spec.tags():
        runs = [(s, cells.Cell(spec.label, task, s, tag)) for s in seeds]
        done = [(s, c) for s, c in runs if cells.read_info(root, c) is not None]
        if len(done) < len(runs):
            # Unfinished: a partial sweep is not a tuned optimizer, and a partial
            # seed set is not the seed average.
            return TaskResult(None, [], None, {}, False, None, None)
        curves[tag] = [cells.read_curve(root, c)["train/loss"] for _, c in done]
        infos[tag] = [cells.read_info(root, c) for _, c in done]
        finals[tag] = scoring.final_value(scoring.smoothed_mean(curves[tag]))
        sweep[tag] = finals[tag] if np.isfinite(finals[tag]) else None
    if not curves:
        return TaskResult(None, [], None, {}, False, None, None)
    tag = scoring.best_tag(finals) or next(iter(curves))  # all diverged: keep one, scored 0
    summaries = [i["summary"] for i in infos[tag]]
    all_cells = [i["summary"] for v in infos.values() for i in v]
    return TaskResult(
        tag=tag,
        seeds=list(seeds),
        smoothed=scoring.smoothed_mean(curves[tag]),
        sweep=sweep,
        diverged=any(s["diverged"] for s in summaries),
        seconds_per_step=float(np.median([s["seconds_per_step"] for s in all_cells])),
        compile_seconds=float(np.max([s["compile_seconds"] for s in all_cells])),
    )


def _none_if_nan(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def build_summary(
    root: str,
    optimizers: Sequence[OptimizerSpec],
    tasks: Sequence[str],
    seeds: Sequence[int],
    reference: str = "adam",
    config: dict[str, Any] | None = None,
    reps: int = 2000,
) -> dict[str, Any]:
    """Score every optimizer against ``reference`` on every finished task.

    The aggregate (IQM, median, optimality gap) of all optimizers runs over
    the same tasks: those where every optimizer and the reference finished.
    """
    results = {o.label: {t: _task_result(root, o, t, seeds) for t in tasks} for o in optimizers}
    ref = results[reference]
    complete = [t for t in tasks if all(results[o.label][t].tag is not None for o in optimizers)]
    summary: dict[str, Any] = {
        "config": dict(config or {}),
        "reference": reference,
        "tasks": list(tasks),
        "tasks_aggregated": complete,
        "tasks_missing": [t for t in tasks if t not in complete],
        "optimizers": {},
    }
    # speedup_horizon: the spec's literal H / t_opt, aggregated too for comparison.
    scores = {"final_loss": {}, "speedup": {}, "speedup_horizon": {}}
    for o in optimizers:
        per_task = {}
        for t in tasks:
            r, rr = results[o.label][t], ref[t]
            entry: dict[str, Any] = {"finished": r.tag is not None}
            if r.tag is not None:
                entry.update(
                    tag=r.tag,
                    learning_rate=None if o.learned else _lr(o, r.tag),
                    final_loss=_none_if_nan(scoring.final_value(r.smoothed)),
                    diverged=r.diverged,
                    sweep=r.sweep if not o.learned else None,
                    seconds_per_step=r.seconds_per_step,
                    compile_seconds=r.compile_seconds,
                )
            if r.tag is not None and rr.tag is not None:
                target = scoring.final_value(rr.smoothed)
                entry.update(
                    final_loss_score=_none_if_nan(
                        scoring.final_loss_score(r.smoothed, rr.smoothed)
                    ),
                    speedup_score=_none_if_nan(scoring.speedup_score(r.smoothed, rr.smoothed)),
                    speedup_score_horizon=_none_if_nan(
                        scoring.speedup_score(r.smoothed, rr.smoothed, horizon=True)
                    ),
                    steps_to_reference=scoring.steps_to_reach(r.smoothed, target),
                )
            per_task[t] = entry
        summary["optimizers"][o.label] = {
            "name": o.name,
            "checkpoint": o.checkpoint,
            "learning_rates": list(o.lrs) or None,
            "per_task": per_task,
        }
        if complete:
            for kind in scores:
                key = "speedup_score_horizon" if kind == "speedup_horizon" else f"{kind}_score"
                scores[kind][o.label] = [per_task[t][key] for t in complete]
    if complete:
        for kind in scores:
            agg = scoring.aggregate(_finite(scores[kind]), reps=reps)
            for label, stats in agg.items():
                entry = summary["optimizers"][label]
                for stat, value in stats.items():
                    key = (
                        stat.replace("iqm", f"iqm_{kind}")
                        .replace("median", f"median_{kind}")
                        .replace("optimality_gap", f"optimality_gap_{kind}")
                    )
                    entry[key] = value
    return summary


def _finite(d: dict[str, list]) -> dict[str, list[float]]:
    # A NaN score (the reference itself diverged everywhere) cannot be aggregated; count it as 0.
    return {k: [0.0 if v is None else v for v in vs] for k, vs in d.items()}


def _lr(spec: OptimizerSpec, tag: str) -> float | None:
    from celo.evaluation.specs import lr_tag

    return next((lr for lr in spec.lrs if lr_tag(lr) == tag), None)


def write_outputs(
    root: str,
    summary: dict[str, Any],
    optimizers: Sequence[OptimizerSpec],
    seeds: Sequence[int],
    report_dir: str | None = None,
) -> None:
    """Write the chosen curves under ``root``; summary.json, the reference and tables.md
    under ``report_dir`` (default ``root``)."""
    dest = report_dir or root
    ref = summary["reference"]
    ref_entry = summary["optimizers"][ref]
    reference = {
        "optimizer": ref,
        "selection": "lowest final EMA(0.9)-smoothed training loss, averaged over seeds",
        "per_task": {
            t: {k: e.get(k) for k in ("learning_rate", "final_loss", "sweep", "diverged")}
            for t, e in ref_entry["per_task"].items()
            if e["finished"]
        },
    }
    storage.write_bytes(
        storage.join(dest, f"reference_{ref}.json"), json.dumps(reference, indent=1).encode()
    )
    for o in optimizers:
        for task, e in summary["optimizers"][o.label]["per_task"].items():
            if not e["finished"]:
                continue
            for s in seeds:
                cell = cells.Cell(o.label, task, s, e["tag"])
                if cells.read_info(root, cell) is not None:
                    path = storage.join(root, "curves", o.label, task, f"seed_{s}.npz")
                    storage.write_bytes(path, storage.read_bytes(cell.base(root) + ".npz"))
    storage.write_bytes(storage.join(dest, "tables.md"), tables_markdown(summary).encode())
    storage.write_bytes(
        storage.join(dest, "summary.json"), json.dumps(summary, indent=1, allow_nan=False).encode()
    )


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def tables_markdown(summary: dict[str, Any]) -> str:
    """The per-task score tables, the aggregate table and the timing table."""
    labels = list(summary["optimizers"])
    opts = summary["optimizers"]
    lines = [
        f"Reference: learning-rate-tuned `{summary['reference']}`; scores above 1 beat it.",
        "",
    ]
    lines += [
        "## Aggregate over tasks (rliable, 95% bootstrap CIs over tasks)",
        "",
        f"Tasks aggregated: {len(summary['tasks_aggregated'])} of {len(summary['tasks'])}.",
        "",
        "| optimizer | IQM final-loss score | IQM speedup | median final-loss | "
        "median speedup | optimality gap (final loss) | IQM speedup, H / t form |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in labels:
        o = opts[k]
        if "iqm_final_loss" not in o:
            continue
        fl, sp = _ci(o["iqm_final_loss_ci"]), _ci(o["iqm_speedup_ci"])
        lines.append(
            f"| {k} | {o['iqm_final_loss']:.2f} {fl} | {o['iqm_speedup']:.2f} {sp} | "
            f"{o['median_final_loss']:.2f} | {o['median_speedup']:.2f} | "
            f"{o['optimality_gap_final_loss']:.2f} | {o['iqm_speedup_horizon']:.2f} "
            f"{_ci(o['iqm_speedup_horizon_ci'])} |"
        )
    for title, key in (
        ("Final-loss score per task", "final_loss_score"),
        ("Speedup score per task", "speedup_score"),
        ("Speedup per task in the spec's H / t form", "speedup_score_horizon"),
        ("Final smoothed training loss per task", "final_loss"),
        ("Seconds per step (median over the task's runs)", "seconds_per_step"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| task | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for t in summary["tasks"]:
            row = []
            for k in labels:
                e = opts[k]["per_task"][t]
                v = e.get(key)
                cell = _fmt(v, 4 if key in ("seconds_per_step", "final_loss") else 2)
                if key == "final_loss" and e.get("learning_rate"):
                    cell += f" (lr {e['learning_rate']:.0e})"
                if e.get("diverged"):
                    cell += " (diverged)"
                row.append(cell)
            lines.append(f"| {t} | " + " | ".join(row) + " |")
    if summary["tasks_missing"]:
        lines += [
            "",
            "Not aggregated (some optimizer has not finished): "
            + ", ".join(summary["tasks_missing"])
            + ".",
        ]
    return "\n".join(lines) + "\n"
