"""Evaluation figures (matplotlib, Agg; no pyplot state, so it is safe anywhere).

* ``curves_<task>.png`` and ``curves_all.png``: smoothed training loss of every
  optimizer on a task (log y), its raw seed-mean faintly behind it, and the
  tuned reference's final loss as a dashed line.
* ``iqm.png``: IQM of the final-loss and speedup scores with 95% CIs; the
  dashed line at 1 is the tuned reference.
* ``profiles.png``: performance profiles (fraction of tasks whose score is
  above τ) with bootstrap bands.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from celo import storage
from celo.evaluation import cells, scoring
from celo.evaluation.specs import OptimizerSpec

COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _save(fig: Figure, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    storage.write_bytes(path, buf.getvalue())
    return path


#: Above this many optimizers, legends go beside the axes instead of over the curves.
_LEGEND_INSIDE_MAX = 8


def palette(n: int) -> list:
    """``n`` colours, all different: the ten above, else matplotlib's ``tab20``
    (up to 20), else evenly spaced samples of ``turbo``."""
    if n <= len(COLORS):
        return list(COLORS[:n])
    cmap = colormaps["tab20"] if n <= 20 else colormaps["turbo"]
    return [cmap(i / (n - 1) if n > 20 else i) for i in range(n)]


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    """Each optimizer's colour, fixed by its position among ``labels`` in every figure."""
    return dict(zip(labels, palette(len(labels)), strict=True))


def _legend(ax, n: int, fontsize: float) -> None:
    if n <= _LEGEND_INSIDE_MAX:
        ax.legend(fontsize=fontsize)
    else:
        ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _draw_task(
    ax,
    task: str,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, str]],
    colors: Mapping[str, Any],
    ref_final: float | None,
) -> None:
    for label, (raw, smooth, legend) in curves.items():
        color = colors[label]
        xs = np.arange(1, len(raw) + 1)
        ax.plot(xs, raw, color=color, alpha=0.2, lw=0.8)
        ax.plot(xs, smooth, color=color, lw=1.6, label=legend)
    if ref_final is not None and np.isfinite(ref_final):
        ax.axhline(ref_final, color="k", ls="--", lw=0.8, label="tuned reference, final")
    ax.set_yscale("log")
    ax.set_title(task, fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.set_ylabel("training loss", fontsize=7)
    ax.tick_params(labelsize=6)


def task_curves(
    root: str,
    summary: Mapping[str, Any],
    optimizers: Sequence[OptimizerSpec],
    seeds: Sequence[int],
    out_dir: str,
) -> list[str]:
    """One PNG per task plus a grid of all tasks; returns the paths written."""
    colors = _colors([o.label for o in optimizers])
    ref = summary["reference"]
    per_task: dict[str, dict[str, tuple[np.ndarray, np.ndarray, str]]] = {}
    for o in optimizers:
        for task, e in summary["optimizers"][o.label]["per_task"].items():
            if not e["finished"]:
                continue
            runs = [
                cells.read_curve(root, cells.Cell(o.label, task, s, e["tag"]))["train/loss"]
                for s in seeds
            ]
            raw = np.mean(runs, axis=0)
            legend = o.label + (f" (lr {e['learning_rate']:.0e})" if e.get("learning_rate") else "")
            if e.get("diverged"):
                legend += " diverged"
            per_task.setdefault(task, {})[o.label] = (raw, scoring.ema(raw), legend)
    ref_final = {t: summary["optimizers"][ref]["per_task"][t].get("final_loss") for t in per_task}
    paths = []
    for task, curves in per_task.items():
        fig = Figure(figsize=(5, 3.4))
        ax = fig.subplots()
        _draw_task(ax, task, curves, colors, ref_final[task])
        _legend(ax, len(curves) + 1, 6)
        paths.append(_save(fig, storage.join(out_dir, f"curves_{task}.png")))
    if per_task:
        n = len(per_task)
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(4 * cols, 3 * rows))
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, (task, curves) in zip(axes, per_task.items()):
            _draw_task(ax, task, curves, colors, ref_final[task])
        for ax in axes[n:]:
            ax.set_visible(False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(
            handles,
            [m.split(" (lr")[0] for m in names],
            loc="lower center",
            ncol=min(len(names), 7),
            fontsize=8,
            bbox_to_anchor=(0.5, 1.0),
        )
        paths.append(_save(fig, storage.join(out_dir, "curves_all.png")))
    return paths


def iqm_bars(summary: Mapping[str, Any], path: str) -> str | None:
    """Bars of the IQM final-loss score and IQM speedup with their 95% CIs."""
    opts = {k: v for k, v in summary["optimizers"].items() if "iqm_final_loss" in v}
    if not opts:
        return None
    colors = _colors(list(summary["optimizers"]))
    fig = Figure(figsize=(8, 0.5 * len(opts) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    names = list(opts)
    ys = np.arange(len(names))
    for ax, key, title in (
        (axes[0], "iqm_final_loss", "IQM final-loss score"),
        (axes[1], "iqm_speedup", "IQM speedup"),
    ):
        vals = np.array([opts[k][key] for k in names])
        ci = np.array([opts[k][f"{key}_ci"] for k in names])
        err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
        ax.barh(ys, vals, xerr=err, color=[colors[k] for k in names], alpha=0.8, capsize=4)
        for y, v, (lo, hi) in zip(ys, vals, ci):
            ax.text(hi, y, f"  {v:.2f} [{lo:.2f}, {hi:.2f}]", fontsize=7, va="center")
        ax.axvline(1.0, color="k", ls="--", lw=0.8)
        ax.set_title(f"{title}\n({len(summary['tasks_aggregated'])} tasks, 95% CI)", fontsize=9)
        ax.set_xlim(0, max(1.2, float(ci[:, 1].max())) * 1.35)  # room for the labels
    axes[0].set_yticks(ys, names)
    fig.tight_layout()
    return _save(fig, path)


def profiles(summary: Mapping[str, Any], path: str, reps: int = 500) -> str | None:
    """Performance profiles of both scores: fraction of tasks with score > τ.

    The bands are rliable's bootstrap over tasks; ``reps`` is kept small because
    every repetition evaluates the whole τ grid.
    """
    tasks = summary["tasks_aggregated"]
    if not tasks:
        return None
    labels = list(summary["optimizers"])
    colors = _colors(labels)
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, key, title in (
        (axes[0], "final_loss_score", "final-loss score"),
        (axes[1], "speedup_score", "speedup"),
    ):
        scores = {
            k: [summary["optimizers"][k]["per_task"][t].get(key) or 0.0 for t in tasks]
            for k in labels
        }
        top = max(2.0, max(max(v) for v in scores.values()) * 1.05)
        taus = np.linspace(0.0, top, 81)
        prof, ci = scoring.performance_profile(scores, taus, reps=reps)
        for k in labels:
            color = colors[k]
            ax.plot(taus, prof[k], color=color, label=k)
            ax.fill_between(taus, ci[k][0], ci[k][1], color=color, alpha=0.15)
        ax.axvline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xlabel(f"τ ({title})")
        ax.set_ylabel("fraction of tasks with score > τ")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"Performance profile: {title}", fontsize=9)
        if ax is axes[-1] or len(labels) <= _LEGEND_INSIDE_MAX:
            _legend(ax, len(labels), 7)
    fig.tight_layout()
    return _save(fig, path)


def make_all(
    root: str,
    summary: Mapping[str, Any],
    optimizers: Sequence[OptimizerSpec],
    seeds: Sequence[int],
    reps: int = 2000,
    report_dir: str | None = None,
) -> list[str]:
    """Every figure, under ``<report_dir or root>/plots``; returns the paths written."""
    out = storage.join(report_dir or root, "plots")
    paths = task_curves(root, summary, optimizers, seeds, out)
    paths += [
        p
        for p in (
            iqm_bars(summary, storage.join(out, "iqm.png")),
            profiles(summary, storage.join(out, "profiles.png"), min(reps, 500)),
        )
        if p
    ]
    return paths
