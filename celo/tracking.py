"""Experiment tracking behind one small interface.

Library code (the meta-trainer, the evaluator) receives a :class:`Tracker` and
never imports a backend. :class:`NoopTracker` is the default;
:class:`JsonlTracker` appends metrics to a local file; the MLflow backend
(:class:`MlflowTracker`, in :mod:`celo.tracking_mlflow`) imports mlflow lazily.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """What a long-running job reports: params once, metrics with steps, artifacts."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NoopTracker:
    """Discards everything."""

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_tags(self, tags):
        pass

    def close(self, status="FINISHED"):
        pass


def _finite_or_str(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else str(f)


class JsonlTracker:
    """Append-only JSON-lines log: one record per call, readable with any tool."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)

    def _write(self, record: dict) -> None:
        record["time"] = time.time()
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_params(self, params):
        self._write({"type": "params", "params": {k: str(v) for k, v in params.items()}})

    def log_metrics(self, metrics, step=None):
        self._write(
            {
                "type": "metrics",
                "step": step,
                "metrics": {k: _finite_or_str(v) for k, v in metrics.items()},
            }
        )

    def log_artifact(self, path, artifact_path=None):
        self._write({"type": "artifact", "path": path, "artifact_path": artifact_path})

    def set_tags(self, tags):
        self._write({"type": "tags", "tags": dict(tags)})

    def close(self, status="FINISHED"):
        self._write({"type": "close", "status": status})


class MultiTracker:
    """Fan one stream out to several trackers."""

    def __init__(self, *trackers: Tracker):
        self.trackers = [t for t in trackers if t is not None]

    def log_params(self, params):
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics, step=None):
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path, artifact_path=None):
        for t in self.trackers:
            t.log_artifact(path, artifact_path)

    def set_tags(self, tags):
        for t in self.trackers:
            t.set_tags(tags)

    def close(self, status="FINISHED"):
        for t in self.trackers:
            t.close(status)


def make_tracker(
    *,
    mlflow_uri: str | None = None,
    experiment: str = "celo",
    stage: str | None = None,
    pipeline_run_id: str | None = None,
    log_path: str | None = None,
    register_model: str | None = None,
    model_alias: str | None = None,
    secrets: tuple[str, ...] = (),
) -> Tracker:
    """The tracker a command should use, from settings the CLI resolved.

    Args:
      mlflow_uri: MLflow tracking URI; ``None``/empty/``"none"`` means no MLflow.
      experiment: MLflow experiment name.
      stage: run name of this stage (child of the pipeline run).
      pipeline_run_id: KFP run id grouping the stages of one pipeline run.
      log_path: JSON-lines log of every record (the stage's spool artifact).
      register_model: registered-model name for the final ``theta.state``.
      model_alias: alias for that model version.
      secrets: values never to be logged.

    Returns:
      An :class:`~celo.tracking_mlflow.MlflowTracker` (which spools to
      ``log_path`` itself), a :class:`JsonlTracker`, or a :class:`NoopTracker`.
    """
    if mlflow_uri and mlflow_uri.lower() != "none":
        from celo.tracking_mlflow import MlflowTracker

        return MlflowTracker(
            mlflow_uri,
            experiment=experiment,
            stage=stage,
            pipeline_run_id=pipeline_run_id,
            spool_path=log_path,
            register_model=register_model,
            model_alias=model_alias,
            secrets=secrets,
        )
    if log_path:
        return JsonlTracker(log_path)
    return NoopTracker()
