"""Run evaluation jobs locally: in this process, or in a pool of worker processes.

Cells are independent, so ``workers > 1`` starts that many long-lived worker
processes (``python -m celo.evaluation.worker``) and hands each the next job
as one JSON line; a worker answers with one JSON line per cell. Long-lived
workers keep their loaded data sets and compiled functions between jobs. A
worker that dies (out of memory, killed) loses only the cell it was training:
the job's remaining cells are reported as errors and retried on the next
resume, and a fresh worker takes the next job.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from celo.evaluation import cells
from celo.evaluation.jobs import Job, run_job

#: Prefix of the protocol lines a worker writes on stdout (anything else is passed through).
PROTOCOL = "@@celo-eval "


def default_workers() -> int:
    """One worker per core, at most two (the size of a CI machine)."""
    return max(1, min(2, os.cpu_count() or 1))


class _Progress:
    """A tqdm bar over cells plus the status of every cell, shared by threads.

    The bar's postfix names the cells that are training and their steps, so a
    long cell (an RNN LM takes hours on a CPU) shows it is moving.
    """

    #: Least seconds between two redraws caused by step reports: on a terminal, and
    #: in a log file (a background run's log gets one line per redraw).
    REFRESH_SECONDS = 0.5
    LOG_REFRESH_SECONDS = 60.0

    def __init__(self, total: int, enabled: bool):
        # miniters=1: a resume skips finished cells in a burst, and tqdm's adaptive
        # miniters would then skip redraws when the slow cells end, hours apart.
        # smoothing=0: the rate is cells per second over the whole run. A job's
        # learning rates end in bursts, and an EMA over them promised an hour-long
        # cell every minute.
        self.bar = tqdm(
            total=total,
            desc="cells",
            unit="cell",
            disable=not enabled,
            dynamic_ncols=True,
            miniters=1,
            smoothing=0,
        )
        tty = getattr(sys.stderr, "isatty", lambda: False)()
        self.refresh_seconds = self.REFRESH_SECONDS if tty else self.LOG_REFRESH_SECONDS
        self.records: list[dict[str, Any]] = []
        self.running: dict[cells.Cell, tuple[int, int]] = {}
        self.lock = threading.Lock()
        self._drawn = 0.0

    def __call__(self, cell: cells.Cell, status: str, info: dict[str, Any]) -> None:
        with self.lock:
            rec = {
                "label": cell.label,
                "task": cell.task,
                "seed": cell.seed,
                "tag": cell.tag,
                "status": status,
            }
            if status == "error":
                rec["error"] = info.get("error")
                tqdm.write(
                    f"cell {cell.label}/{cell.task}/seed_{cell.seed}/{cell.tag} failed: "
                    f"{info.get('error')}",
                    file=sys.stderr,
                )
            elif status == "done":
                s = info["summary"]
                rec.update(diverged=s["diverged"], seconds_per_step=s["seconds_per_step"])
            self.records.append(rec)
            self.running.pop(cell, None)
            self.bar.set_postfix_str(self._postfix(cell), refresh=False)
            if status == "skipped" and not self.bar.disable:
                # A resume's finished cells are a head start, not progress: tqdm leaves
                # ``initial`` out of its rate and estimate (a disabled bar has none).
                self.bar.initial += 1
            self.bar.update(1)

    def step(self, cell: cells.Cell, done: int, total: int) -> None:
        """Note that ``cell`` has trained ``done`` of its ``total`` steps."""
        with self.lock:
            self.running[cell] = (done, total)
            now = time.monotonic()
            redraw = now - self._drawn >= self.refresh_seconds
            if redraw:
                self._drawn = now
            self.bar.set_postfix_str(self._postfix(cell), refresh=redraw)

    def _postfix(self, last: cells.Cell) -> str:
        """The training cells with their steps, or else the cell that ended last."""
        if not self.running:
            return f"{last.label} {last.task[:28]}"
        return " | ".join(
            f"{c.label} {c.task[:28]} {c.tag} {done}/{total}"
            for c, (done, total) in self.running.items()
        )

    def close(self):
        self.bar.close()


def execute(
    jobs: Sequence[Job],
    workers: int = 1,
    progress: bool = True,
    worker_env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` and return one status record per cell (done, skipped or error).

    Args:
      jobs: the jobs, in the order they should start.
      workers: 1 runs in this process; more starts that many worker processes.
      progress: show a tqdm bar over cells.
      worker_env: environment of the worker processes (default: this one's).
    """
    total = sum(len(j.cells()) for j in jobs)
    bar = _Progress(total, progress)
    try:
        if workers <= 1:
            for job in jobs:
                run_job(job, bar, bar.step)
        else:
            _pool(jobs, workers, bar, worker_env)
    finally:
        bar.close()
    return bar.records


def _pool(jobs: Sequence[Job], workers: int, bar: _Progress, env: dict[str, str] | None) -> None:
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    failures: list[BaseException] = []
    threads = [
        threading.Thread(target=_serve, args=(todo, bar, env, failures), daemon=True)
        for _ in range(min(workers, len(jobs)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def _start_worker(env: dict[str, str] | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celo.evaluation.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=env,
    )


def _serve(todo: queue.Queue, bar: _Progress, env, failures: list) -> None:
    proc = None
    try:
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            if proc is None or proc.poll() is not None:
                proc = _start_worker(env)
            proc.stdin.write(json.dumps(job.to_json()) + "\n")
            proc.stdin.flush()
            reported = set()
            finished = False
            for line in proc.stdout:
                if not line.startswith(PROTOCOL):
                    sys.stdout.write(line)
                    continue
                msg = json.loads(line[len(PROTOCOL) :])
                if msg["event"] == "cell":
                    cell = cells.Cell(**msg["cell"])
                    reported.add(cell)
                    bar(cell, msg["status"], msg.get("info", {}))
                elif msg["event"] == "progress":
                    bar.step(cells.Cell(**msg["cell"]), msg["done"], msg["total"])
                elif msg["event"] == "fatal":
                    raise cells.ConfigMismatchError(msg["error"])
                elif msg["event"] == "job_done":
                    finished = True
                    break
            if not finished:  # the worker died mid-job
                code = proc.wait()
                for cell in job.cells():
                    if cell not in reported:
                        bar(cell, "error", {"error": f"worker exited with code {code}"})
                proc = None
    except BaseException as e:
        failures.append(e)
    finally:
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            proc.wait()
