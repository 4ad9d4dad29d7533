"""Worker process of the local executor: reads jobs as JSON lines, runs them.

Started by :mod:`celo.evaluation.executor` as ``python -m celo.evaluation.worker``.
Each line on stdin is one :class:`~celo.evaluation.jobs.Job`; for every cell
the worker writes ``progress`` lines while it trains (the first chunk, then at
most one per :data:`PROGRESS_SECONDS`, and the last), one ``cell`` line when it
ends, then ``job_done``.
"""

from __future__ import annotations

import json
import sys
import time

from celo.evaluation import cells
from celo.evaluation.executor import PROTOCOL
from celo.evaluation.jobs import Job, run_job


def _emit(msg: dict) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(msg) + "\n")
    sys.stdout.flush()


#: Least seconds between two ``progress`` lines of one cell.
PROGRESS_SECONDS = 2.0


class _StepReporter:
    """Forwards a cell's training steps to the parent process, throttled."""

    def __init__(self):
        self.last: dict[cells.Cell, float] = {}

    def __call__(self, cell: cells.Cell, done: int, total: int) -> None:
        now = time.monotonic()
        last = self.last.get(cell)
        if last is not None and done < total and now - last < PROGRESS_SECONDS:
            return
        self.last[cell] = now
        _emit({"event": "progress", "cell": cell.__dict__, "done": done, "total": total})


def _on_cell(cell: cells.Cell, status: str, info: dict) -> None:
    slim = {"summary": info["summary"]} if "summary" in info else {}
    if "error" in info:
        slim["error"] = info["error"]
        sys.stderr.write(info.get("traceback", "") + "\n")
    _emit({"event": "cell", "cell": cell.__dict__, "status": status, "info": slim})


def main() -> int:
    report = _StepReporter()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = Job.from_json(json.loads(line))
        try:
            run_job(job, _on_cell, report)
        except cells.ConfigMismatchError as e:
            _emit({"event": "fatal", "error": str(e)})
        _emit({"event": "job_done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
