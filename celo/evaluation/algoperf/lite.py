"""AlgoPerf-lite end to end: a pool of submissions on the lite workloads, scored.

Also the two helpers around it: :func:`calibrate` (the scaled-down target
procedure) and :func:`export` (a ``submission.py`` for the real runner).
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections.abc import Sequence
from typing import Any

from celo import storage
from celo.evaluation.algoperf import harness, submission
from celo.evaluation.algoperf.workloads import WORKLOADS, get_workload
from celo.evaluation.specs import OptimizerSpec, local_checkpoint


def run_pool(
    specs: Sequence[OptimizerSpec],
    workload_names: Sequence[str] = tuple(WORKLOADS),
    *,
    seed: int = 0,
    max_steps: int | None = None,
    learning_rate: float = 1e-3,
    data_dir: str | None = None,
    time_budget: bool = True,
    log=print,
) -> dict[str, Any]:
    """Run every submission on every workload (self-tuning ruleset) and score the pool.

    ``time_budget=False`` lets every run go to its step limit (see
    :func:`~celo.evaluation.algoperf.harness.run_submission`).

    Returns:
      ``{"runs": [RunResult as dict], "scores": {"steps": {...}, "seconds": {...}},
      "table": markdown}``.
    """
    runs = []
    for name in workload_names:
        workload = get_workload(name, data_dir)
        for spec in specs:
            ckpt = local_checkpoint(spec.checkpoint) if spec.checkpoint else None
            submission.configure(spec.name, ckpt, learning_rate)
            result = harness.run_submission(
                workload,
                submission,
                spec.label,
                seed=seed,
                max_steps=max_steps,
                data_dir=data_dir,
                time_budget=time_budget,
            )
            log(
                f"{name:>22} {spec.label:>12}: "
                + (
                    f"target at step {result.steps_to_target} ({result.seconds_to_target:.1f} s)"
                    if result.reached
                    else f"missed (best validation {workload.target_metric_name} "
                    f"{result.best_validation:.4f}, target {workload.validation_target_value})"
                )
            )
            runs.append(result)
    scores = {}
    for unit, attr in (("steps", "steps_to_target"), ("seconds", "seconds_to_target")):
        times: dict[str, dict[str, float | None]] = {}
        for r in runs:
            times.setdefault(r.submission, {})[r.workload] = getattr(r, attr)
        _, _, scores[unit] = harness.performance_profiles(times)
    return {
        "runs": [r.to_json() for r in runs],
        "scores": scores,
        "table": table_markdown(runs, scores),
    }


def metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat metrics of a pool run: steps/seconds to target and the scores."""
    out = {}
    for r in result["runs"]:
        key = f"algoperf/{r['submission']}/{r['workload']}"
        out[f"{key}/reached"] = float(r["reached"])
        out[f"{key}/best_validation"] = r["best_validation"]
        if r["reached"]:
            out[f"{key}/steps_to_target"] = r["steps_to_target"]
            out[f"{key}/seconds_to_target"] = r["seconds_to_target"]
    for unit, scores in result["scores"].items():
        for sub, score in scores.items():
            out[f"algoperf/{sub}/score_{unit}"] = score
    return out


def table_markdown(runs: Sequence[harness.RunResult], scores: dict[str, dict[str, float]]) -> str:
    subs = list(dict.fromkeys(r.submission for r in runs))
    names = list(dict.fromkeys(r.workload for r in runs))
    by = {(r.workload, r.submission): r for r in runs}
    lines = ["| workload (target) | " + " | ".join(subs) + " |", "|---|" + "---|" * len(subs)]
    for w in names:
        wl = WORKLOADS[w]
        target = (
            f"{wl.target_metric_name} {'≥' if wl.target_metric_higher_is_better else '≤'} "
            f"{wl.validation_target_value}"
        )
        row = []
        for s in subs:
            r = by.get((w, s))
            if r is None:
                row.append("–")
            elif r.reached:
                row.append(f"{r.steps_to_target} steps, {r.seconds_to_target:.1f} s")
            else:
                row.append(f"missed (best {r.best_validation:.4f})")
        lines.append(f"| {w} ({target}) | " + " | ".join(row) + " |")
    for unit in ("steps", "seconds"):
        lines.append(
            f"| **score, time in {unit}** (r_max 4) | "
            + " | ".join(f"{scores[unit][s]:.3f}" for s in subs)
            + " |"
        )
    return "\n".join(lines) + "\n"


def calibrate(
    workload_name: str,
    lrs: Sequence[float] = (1e-3, 3e-3, 1e-2),
    seeds: Sequence[int] = (0, 1, 2),
    optimizer: str = "nadamw",
    data_dir: str | None = None,
    log=print,
) -> dict[str, Any]:
    """The scaled-down AlgoPerf target procedure for one workload.

    Sweep ``optimizer``'s learning rate on seed 0 (each run to ``step_hint``
    steps), rerun the best on ``seeds`` and take the median of the best
    validation metric each run reached. Targets are switched off while
    calibrating, so every run goes to the end.
    """
    workload = get_workload(workload_name, data_dir)
    higher = workload.target_metric_higher_is_better
    workload.validation_target_value = -float("inf") if not higher else float("inf")
    best_of = {}
    for lr in lrs:
        submission.configure(optimizer, None, lr)
        r = harness.run_submission(
            workload, submission, optimizer, seed=seeds[0], data_dir=data_dir
        )
        best_of[lr] = r.best_validation
        log(f"{workload_name} {optimizer} lr {lr:g}: best validation {r.best_validation:.4f}")
    pick = (max if higher else min)(best_of, key=best_of.get)
    finals = [best_of[pick]]
    for s in seeds[1:]:
        submission.configure(optimizer, None, pick)
        finals.append(
            harness.run_submission(
                workload, submission, optimizer, seed=s, data_dir=data_dir
            ).best_validation
        )
    return {
        "workload": workload_name,
        "optimizer": optimizer,
        "sweep": best_of,
        "learning_rate": pick,
        "best_per_seed": finals,
        "target": statistics.median(finals),
    }


_TEMPLATE = '''"""AlgoPerf submission: {label} ({name}), exported by `celo algoperf export`."""

import os

from celo.evaluation.algoperf import submission as _impl

_impl.configure({name!r}, {checkpoint})

get_batch_size = _impl.get_batch_size
init_optimizer_state = _impl.init_optimizer_state
update_params = _impl.update_params
prepare_for_eval = _impl.prepare_for_eval
data_selection = _impl.data_selection
'''


def export(spec: OptimizerSpec, out_dir: str, learning_rate: float | None = None) -> str:
    """Write ``out_dir/submission.py`` (and ``theta.state`` for a learned optimizer)."""
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = "None"
    if spec.checkpoint:
        shutil.copyfile(local_checkpoint(spec.checkpoint), os.path.join(out_dir, "theta.state"))
        checkpoint = 'os.path.join(os.path.dirname(os.path.abspath(__file__)), "theta.state")'
    text = _TEMPLATE.format(label=spec.label, name=spec.name, checkpoint=checkpoint)
    if learning_rate is not None:
        text = text.replace(f"{checkpoint})", f"{checkpoint}, learning_rate={learning_rate!r})")
    path = os.path.join(out_dir, "submission.py")
    storage.write_bytes(path, text.encode())
    return path
