"""One IQM table from one or more evaluation folders (``celo evaluate`` outputs).

Used by ``celo pipeline compare`` (the re-evaluation pipeline's last stage)
and by ``celo pipeline run --local`` to print the scores of the run. A folder
holding ``error.json`` is an evaluation that failed (for example a checkpoint
that could not be downloaded); it is listed as failed, never silently dropped,
and a partial ``summary.json`` next to it is not used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from celo.tracking import NoopTracker, Tracker


def _fmt(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}"
    if ci and len(ci) == 2:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def rows_of(summary: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """One row per optimizer of an evaluation summary."""
    out = []
    reference = (summary.get("config") or {}).get("reference", summary.get("reference", "adam"))
    for label, o in summary.get("optimizers", {}).items():
        out.append(
            {
                "source": source,
                "optimizer": label,
                "reference": label == reference,
                "iqm_final_loss": o.get("iqm_final_loss"),
                "iqm_final_loss_ci": o.get("iqm_final_loss_ci"),
                "iqm_speedup": o.get("iqm_speedup"),
                "iqm_speedup_ci": o.get("iqm_speedup_ci"),
                "tasks": len(o.get("per_task", {})),
            }
        )
    return out


def compare(
    results: Sequence[str], output: str | None = None, tracker: Tracker | None = None
) -> dict[str, Any]:
    """Read every folder, write ``comparison.json`` and ``comparison.md`` to ``output``.

    Args:
      results: evaluation folders (``summary.json`` or ``error.json`` inside).
      output: folder for the comparison (skipped when ``None``).
      tracker: receives ``<optimizer>/iqm_final_loss`` and ``…/iqm_speedup``.

    Returns:
      ``{"rows": [...], "failed": [{"source", "error"}]}``. The tuned reference
      appears once, from the first folder that has it.
    """
    tracker = tracker or NoopTracker()
    rows, failed, seen_reference = [], [], False
    for folder in results:
        source = _source_name(folder)
        summary_path, error_path = (os.path.join(folder, n) for n in ("summary.json", "error.json"))
        if os.path.exists(summary_path) and not os.path.exists(error_path):
            with open(summary_path) as f:
                for row in rows_of(json.load(f), source):
                    if row["reference"] and seen_reference:
                        continue
                    seen_reference |= row["reference"]
                    rows.append(row)
        else:
            error = "no summary.json"
            if os.path.exists(error_path):
                with open(error_path) as f:
                    error = json.load(f).get("error", error)
            failed.append({"source": source, "error": error})
    table = {"rows": rows, "failed": failed}
    metrics = {}
    for row in rows:
        for key in ("iqm_final_loss", "iqm_speedup"):
            if row[key] is not None:
                metrics[f"{row['optimizer']}/{key}"] = row[key]
    if metrics:
        tracker.log_metrics(metrics)
    if output:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "comparison.json"), "w") as f:
            json.dump(table, f, indent=1)
        with open(os.path.join(output, "comparison.md"), "w") as f:
            f.write(render(table) + "\n")
        tracker.log_artifact(os.path.join(output, "comparison.md"), "comparison")
    return table


def render(table: dict[str, Any]) -> str:
    """The comparison as a Markdown table (IQM with 95% bootstrap CIs)."""
    lines = [
        "| optimizer | IQM final-loss score [95% CI] | IQM speedup [95% CI] | tasks |",
        "|---|---|---|---|",
    ]
    for row in table["rows"]:
        name = row["optimizer"] + (" (tuned reference)" if row["reference"] else "")
        lines.append(
            f"| {name} | {_fmt(row['iqm_final_loss'], row['iqm_final_loss_ci'])} | "
            f"{_fmt(row['iqm_speedup'], row['iqm_speedup_ci'])} | {row['tasks']} |"
        )
    for failure in table["failed"]:
        lines.append(f"| {failure['source']} | FAILED: {failure['error']} | | |")
    return "\n".join(lines)


def _source_name(folder: str) -> str:
    """What an evaluation folder evaluated: the command line's checkpoint if recorded."""
    error_path = os.path.join(folder, "error.json")
    if os.path.exists(error_path):
        with open(error_path) as f:
            argv = json.load(f).get("command", [])
        if "--optimizers" in argv:
            return argv[argv.index("--optimizers") + 1]
    return os.path.basename(os.path.dirname(os.path.normpath(folder))) or folder
