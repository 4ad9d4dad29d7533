"""What a pipeline stage needs around one ``celo`` command.

The Kubeflow components (``components/``) are interfaces: their bodies call
:func:`run_stage` (re-exported by :mod:`celo.cli`) with the subcommand and a
flag → value mapping. This module turns that mapping into a command line,
runs it in-process, fails the task on a non-zero exit, and fills the typed KFP
outputs that a command line cannot reach: the scalar ``Metrics`` (from the
stage's tracking log) and an ``HTML`` report (tables and plots of a results
folder). It imports neither kfp nor mlflow: KFP artifacts are used through
their ``path`` and ``log_metric`` only.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import html
import io
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

#: Metrics copied into a KFP ``Metrics`` artifact at most (the UI lists them all).
MAX_KFP_METRICS = 300


def build_argv(command: str, flags: Mapping[str, Any]) -> list[str]:
    """``command`` (split on spaces) followed by the flags.

    ``None``, ``""``, ``[]`` and ``False`` are left out, ``True`` gives a bare
    switch and a list gives ``--flag v1 v2 …``.
    """
    argv = command.split()
    for flag, value in flags.items():
        if value is None or value is False or value == "" or value == []:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def theta_in(path: str) -> str:
    """The ``theta.state`` inside a Model artifact.

    A meta-training stage writes ``<artifact>/train/<exp_id>/theta.state``; a
    file path, or a folder holding ``theta.state`` directly, is returned as is.
    """
    if os.path.isfile(path) or "://" in path:
        return path
    if os.path.isfile(os.path.join(path, "theta.state")):
        return os.path.join(path, "theta.state")
    found = sorted(glob.glob(os.path.join(path, "train", "*", "theta.state")))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one train/<exp_id>/theta.state under {path}, found {len(found)}"
        )
    return found[0]


def checkpoint_spec(checkpoint: str) -> str:
    """A ``celo evaluate --optimizers`` spec for a released checkpoint.

    ``owner/repo`` and ``hf://owner/repo`` become ``repo:name=hf://owner/repo``
    with the optimizer named after the repository when the registry knows the
    name (``celo-adam`` → ``celo_adam``, ``rnn-mlp-lopt`` → ``rnn_mlp``) and
    ``celo`` otherwise; a path to a ``theta.state`` becomes ``celo=PATH``; a
    string that already holds ``=`` is a full spec and is returned unchanged.
    """
    if "=" in checkpoint:
        return checkpoint
    if checkpoint.endswith(".state") or os.path.exists(checkpoint):
        return f"celo={checkpoint}"
    repo = checkpoint.removeprefix("hf://").strip("/")
    if repo.count("/") != 1:
        raise ValueError(
            f"cannot read {checkpoint!r} as owner/repo, hf://owner/repo, a "
            "theta.state path or a NAME=URI spec"
        )
    from celo.optimizers.registry import canonical_name, is_learned

    label = repo.split("/")[1]
    try:
        name = canonical_name(label.replace("-", "_"))
    except ValueError:
        name = "celo"
    return f"{label}:{name if is_learned(name) else 'celo'}=hf://{repo}"


def last_metrics(log_path: str) -> dict[str, float]:
    """Last value of every metric in a tracking log (JSON lines)."""
    out: dict[str, float] = {}
    if not log_path or not os.path.exists(log_path):
        return out
    with open(log_path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else {}
            if record.get("type") != "metrics":
                continue
            for key, value in record["metrics"].items():
                try:
                    out[key] = float(value)
                except (TypeError, ValueError):
                    pass
    return out


def html_report(results_dir: str, dest: str, title: str) -> None:
    """One self-contained HTML page: the Markdown tables and PNG plots of a results folder."""
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>"
    ]
    for md in sorted(glob.glob(os.path.join(results_dir, "**", "*.md"), recursive=True)):
        with open(md) as f:
            parts.append(
                f"<h2>{html.escape(os.path.relpath(md, results_dir))}</h2>"
                f"<pre>{html.escape(f.read())}</pre>"
            )
    for png in sorted(glob.glob(os.path.join(results_dir, "**", "*.png"), recursive=True)):
        with open(png, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(
            f"<h3>{html.escape(os.path.relpath(png, results_dir))}</h3>"
            f"<img style='max-width:100%' src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    with open(dest, "w") as f:
        f.write("\n".join(parts))


class _Tee(io.TextIOBase):
    """Writes through to a stream and keeps the tail, for error messages."""

    def __init__(self, stream, keep: int = 4000):
        self.stream, self.keep, self.tail = stream, keep, ""

    def write(self, s):
        self.tail = (self.tail + s)[-self.keep :]
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()


def _reason(tee: _Tee) -> str:
    """What went wrong, from the command's stderr: its last error line, else its last line."""
    lines = [line.strip() for line in tee.tail.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"(Error|Exception)\b", line)]
    pick = errors[-1] if errors else lines[-1] if lines else ""
    return f": {pick[:400]}" if pick else ""


def run_stage(
    command: str,
    flags: Mapping[str, Any],
    *,
    metrics: Any = None,
    report: Any = None,
    report_from: str | None = None,
    soft_fail_dir: str | None = None,
) -> None:
    """Run ``celo <command> <flags>`` as a pipeline stage.

    Args:
      command: the ``celo`` subcommand.
      flags: flag → value (see :func:`build_argv`).
      metrics: a KFP ``Metrics`` output; receives the last value of every
        metric in the stage's ``--tracking-log``.
      report: a KFP ``HTML`` output; receives the tables and plots of
        ``report_from``.
      report_from: the results folder the report is built from.
      soft_fail_dir: if set, a failure is recorded in ``<dir>/error.json`` and
        the task succeeds, so that sibling tasks in a fan-out can still be
        collected (the collecting stage then fails the run, naming it).

    Raises:
      RuntimeError: when the command fails and ``soft_fail_dir`` is not set.
    """
    from celo.cli import main

    argv = build_argv(command, flags)
    print("+ celo " + " ".join(argv), flush=True)
    tee = _Tee(sys.stderr)
    t0 = time.time()
    try:
        with contextlib.redirect_stderr(tee):
            rc = main(argv)
        error = None if rc == 0 else f"celo {command} exited with status {rc}" + _reason(tee)
    except Exception as e:  # noqa: BLE001 - recorded or re-raised below
        error = f"celo {command} failed: {type(e).__name__}: {e}"
        if soft_fail_dir is None:
            raise RuntimeError(error) from e
        traceback.print_exc()
    if report is not None and report_from and os.path.isdir(report_from):
        html_report(report_from, report.path, "celo " + " ".join(argv[:2]))
    if error is not None:
        if soft_fail_dir is None:
            raise RuntimeError(error + "\n" + tee.tail[-2000:])
        os.makedirs(soft_fail_dir, exist_ok=True)
        with open(os.path.join(soft_fail_dir, "error.json"), "w") as f:
            json.dump(
                {
                    "command": argv,
                    "error": error,
                    "stderr_tail": tee.tail[-2000:],
                    "seconds": time.time() - t0,
                },
                f,
                indent=1,
            )
        print(f"stage failed (recorded in {soft_fail_dir}/error.json): {error}", file=sys.stderr)
        return
    if metrics is not None:
        values = last_metrics(flags.get("--tracking-log") or "")
        for key in sorted(values)[:MAX_KFP_METRICS]:
            metrics.log_metric(key, values[key])
