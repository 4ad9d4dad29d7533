"""Worker process of the local executor: reads jobs as JSON lines, runs them.

Started by :mod:`celo.evaluation.executor` as ``python -m celo.evaluation.worker``.
Each line on stdin is one :class:`~celo.evaluation.jobs.Job`; for every cell
the worker writes one protocol line on stdout, then ``job_done``.
"""

from __future__ import annotations

import json
import sys

from celo.evaluation import cells
from celo.evaluation.executor import PROTOCOL
from celo.evaluation.jobs import Job, run_job


def _emit(msg: dict) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(msg) + "\n")
    sys.stdout.flush()


def _on_cell(cell: cells.Cell, status: str, info: dict) -> None:
    slim = {"summary": info["summary"]} if "summary" in info else {}
    if "error" in info:
        slim["error"] = info["error"]
        sys.stderr.write(info.get("traceback", "") + "\n")
    _emit({"event": "cell", "cell": cell.__dict__, "status": status, "info": slim})


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        job = Job.from_json(json.loads(line))
        try:
            run_job(job, _on_cell)
        except cells.ConfigMismatchError as e:
            _emit({"event": "fatal", "error": str(e)})
        _emit({"event": "job_done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
