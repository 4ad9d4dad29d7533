"""MLflow backend of :class:`celo.tracking.Tracker`, with an offline spool.

One pipeline run is one MLflow *parent* run, found or created by its KFP run
id (tag ``celo.pipeline_run_id``); every stage is a *child* run of it, created
in its own process (``mlflow.parentRunId``). The parent also receives the last
value of every summary metric of a stage (a key with at most two ``/``, so
``eval/celo/iqm_final_loss`` but not the per-task scores) as
``<stage>/<metric>``, so that the runs list and the comparison view show the
headline numbers of each pipeline run side by side.

Losing a run because of the tracker is not acceptable, so nothing raised by
MLflow reaches the caller. Every record is first appended to a JSON-lines spool
(the stage's output artifact). When the server cannot be reached the tracker
warns once and stops calling it; at :meth:`MlflowTracker.close` it tries once
more and, if the server is back, replays what it missed. :func:`replay` does
the same later, from the spool file.

mlflow is imported here only, and only when a tracker is built.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from celo.tracking import JsonlTracker, Tracker

#: Parameters whose name looks like this are never sent (their value is replaced).
SECRET_NAME = re.compile(r"token|secret|password|passwd|credential|api[_-]?key|private", re.I)
REDACTED = "***"
#: Tag names shared with the pipeline.
RUN_ID_TAG, STAGE_TAG, ROLE_TAG = "celo.pipeline_run_id", "celo.stage", "celo.role"
#: MLflow error codes that mean "the server rejected this call", not "the server is gone".
_REJECTED = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "BAD_REQUEST",
    "INVALID_STATE",
    "PERMISSION_DENIED",
    "RESOURCE_LIMIT_EXCEEDED",
}
_MAX_PARAM_LEN = 6000


class TrackingUnavailableWarning(RuntimeWarning):
    """MLflow could not be reached; the stage goes on and spools its records."""


def latest_pipeline_runs(client, experiment: str, n: int) -> list:
    """The ``n`` newest parent (pipeline) runs of ``experiment``, newest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        f"tags.`{ROLE_TAG}` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=n,
    )


def _metric_key(key: str) -> str:
    # MLflow keys allow alphanumerics, "_-./ " only; keep the rest readable.
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(key))


def _redact(params: Mapping[str, Any], secrets: Iterable[str]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        text = str(value)
        if SECRET_NAME.search(str(key)):
            text = REDACTED
        for s in secrets:
            text = text.replace(s, REDACTED)
        out[_metric_key(key)] = text[:_MAX_PARAM_LEN]
    return out


class MlflowTracker:
    """A stage's MLflow run (a child of its pipeline run), with an offline spool.

    Args:
      tracking_uri: MLflow tracking URI (``http://…``, ``sqlite:///…``).
      experiment: experiment name; created when missing.
      stage: the run name of this stage (``meta_train_phase1``, ``evaluate``…).
      pipeline_run_id: KFP run id; groups the stage under that pipeline's parent
        run. Without it the stage is a top-level run.
      spool_path: JSON-lines file receiving every record (default: none).
      register_model: on a successful close, register the last logged
        ``theta.state`` as a version of this registered model.
      model_alias: alias given to that version.
      secrets: values that must never reach MLflow (replaced in params).
      request_timeout: seconds per HTTP request; a dead server costs little.
      max_retries: HTTP retries per request.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "celo",
        stage: str | None = None,
        pipeline_run_id: str | None = None,
        spool_path: str | None = None,
        register_model: str | None = None,
        model_alias: str | None = None,
        secrets: Iterable[str] = (),
        request_timeout: float = 10.0,
        max_retries: int = 2,
    ):
        self.tracking_uri, self.experiment, self.stage = tracking_uri, experiment, stage
        self.pipeline_run_id = pipeline_run_id or None
        self.register_model, self.model_alias = register_model or None, model_alias or None
        self.secrets = [s for s in secrets if s and len(s) >= 4]
        self.spool = JsonlTracker(spool_path) if spool_path else None
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.model_version: str | None = None
        self._offline = False
        self._warned = False
        self._backlog: list[dict] = []
        self._last: dict[str, float] = {}
        self._checkpoint: tuple[str, str] | None = None  # (local path, artifact path)
        # mlflow reads these at request time; defaults (7 retries, 120 s) would stall training.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        self._call(self._start)

    # -- connection handling -------------------------------------------------------------

    def _start(self) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self.experiment_id = self._experiment_id()
        tags = {STAGE_TAG: self.stage or "", ROLE_TAG: "stage"}
        if self.pipeline_run_id:
            self.parent_run_id = self._parent()
            tags.update(
                {"mlflow.parentRunId": self.parent_run_id, RUN_ID_TAG: self.pipeline_run_id}
            )
        run = self.client.create_run(self.experiment_id, run_name=self.stage, tags=tags)
        self.run_id = run.info.run_id

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # created by a parallel stage in the meantime
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _parent(self) -> str:
        """Find or create the pipeline's parent run; parallel stages agree on the oldest."""
        query = f"tags.`{RUN_ID_TAG}` = '{self.pipeline_run_id}' and tags.`{ROLE_TAG}` = 'pipeline'"

        def oldest():
            runs = self.client.search_runs([self.experiment_id], query, max_results=50)
            runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
            return runs[0].info.run_id if runs else None

        found = oldest()
        if found:
            return found
        mine = self.client.create_run(
            self.experiment_id,
            run_name=f"pipeline-{self.pipeline_run_id}",
            tags={RUN_ID_TAG: self.pipeline_run_id, ROLE_TAG: "pipeline"},
        ).info.run_id
        winner = oldest() or mine
        if winner != mine:
            self.client.delete_run(mine)
        return winner

    def _call(self, fn, *args, record: dict | None = None) -> Any:
        """Run one MLflow call; never raise. Connection trouble switches to offline mode."""
        if self._offline:
            if record is not None:
                self._backlog.append(record)
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - the run must survive any tracker failure
            code = getattr(e, "error_code", None)
            if code in _REJECTED and self.run_id is not None:
                warnings.warn(
                    f"MLflow rejected a call ({code}): {e}",
                    TrackingUnavailableWarning,
                    stacklevel=3,
                )
                return None
            self._offline = True
            if record is not None:
                self._backlog.append(record)
            if not self._warned:
                self._warned = True
                where = f"; records go to {self.spool.path}" if self.spool else ""
                warnings.warn(
                    f"MLflow at {self.tracking_uri} is unreachable ({_short(e)}); "
                    f"the stage goes on without it{where}",
                    TrackingUnavailableWarning,
                    stacklevel=3,
                )
            return None

    @property
    def online(self) -> bool:
        """Whether the tracker is still talking to MLflow."""
        return not self._offline and self.run_id is not None

    # -- the Tracker interface -----------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        clean = _redact(params, self.secrets)
        if self.spool:
            self.spool.log_params(clean)
        self._call(self._send_params, clean, record={"type": "params", "params": clean})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {_metric_key(k): float(v) for k, v in metrics.items() if _is_number(v)}
        self._last.update(clean)
        if self.spool:
            self.spool.log_metrics(clean, step)
        ts = int(time.time() * 1000)
        self._call(
            self._send_metrics,
            clean,
            step,
            ts,
            record={"type": "metrics", "metrics": clean, "step": step, "time": ts / 1000},
        )

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        if os.path.basename(path) == "theta.state":
            self._checkpoint = (path, artifact_path or "")
        if self.spool:
            self.spool.log_artifact(path, artifact_path)
        self._call(
            self._send_artifact,
            path,
            artifact_path,
            record={"type": "artifact", "path": path, "artifact_path": artifact_path},
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        clean = {k: str(v) for k, v in tags.items()}
        if self.spool:
            self.spool.set_tags(clean)
        self._call(self._send_tags, clean, record={"type": "tags", "tags": clean})

    def close(self, status: str = "FINISHED") -> None:
        """End the run: replay a backlog if MLflow is back, register the checkpoint, summarise."""
        if self.spool:
            self.spool.close(status)
        if self._offline and self.run_id is not None:
            self._reconnect()
        if self.run_id is None:
            return
        if status == "FINISHED" and self.register_model and self._checkpoint:
            self._call(self._register)
        if self.parent_run_id and self._last:
            prefix = self.stage or "stage"
            self._call(
                self._send_metrics,
                {f"{prefix}/{k}": v for k, v in self._last.items() if k.count("/") <= 2},
                None,
                int(time.time() * 1000),
                self.parent_run_id,
            )
        self._call(self.client.set_terminated, self.run_id, status)
        if self.parent_run_id:
            self._call(self._end_parent, status)

    # -- MLflow calls ---------------------------------------------------------------------

    def _send_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _send_metrics(
        self, metrics: dict[str, float], step: int | None, ts: int, run_id: str | None = None
    ) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, v, ts, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id or self.run_id, metrics=items[i : i + 1000])

    def _send_artifact(self, path: str, artifact_path: str | None) -> None:
        if "://" in path:
            # MLflow logs local files only: stage a remote file (or folder) locally first.
            with tempfile.TemporaryDirectory(prefix="celo-artifact-") as tmp:
                self._send_artifact(_stage_remote(path, tmp), artifact_path)
            return
        if os.path.isdir(path):
            self.client.log_artifacts(self.run_id, path, artifact_path)
        else:
            self.client.log_artifact(self.run_id, path, artifact_path)

    def _send_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def _register(self) -> None:
        path, artifact_path = self._checkpoint
        run = self.client.get_run(self.run_id)
        source = "/".join(p for p in (run.info.artifact_uri, artifact_path) if p)
        try:
            self.client.create_registered_model(self.register_model)
        except Exception as e:  # noqa: BLE001
            if getattr(e, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(
            self.register_model,
            source=source,
            run_id=self.run_id,
            tags={STAGE_TAG: self.stage or "", "file": os.path.basename(path)},
            description=f"theta.state from stage {self.stage} of pipeline run "
            f"{self.pipeline_run_id or '-'}",
        )
        self.model_version = str(mv.version)
        if self.model_alias:
            self.client.set_registered_model_alias(
                self.register_model, self.model_alias, mv.version
            )
        self.client.set_tag(
            self.run_id, "celo.model_version", f"{self.register_model}/{mv.version}"
        )

    def _end_parent(self, status: str) -> None:
        parent = self.client.get_run(self.parent_run_id)
        if parent.info.status != "FAILED":  # a failed stage marks the whole pipeline run
            self.client.set_terminated(self.parent_run_id, status)

    def _reconnect(self) -> None:
        self._offline = False
        self._call(self.client.get_run, self.run_id)
        if self._offline:
            return
        backlog, self._backlog = self._backlog, []
        for record in backlog:
            _dispatch(self, record, spool=False)


def _send_record(tracker: MlflowTracker, record: dict) -> None:
    kind = record.get("type")
    if kind == "params":
        tracker._call(tracker._send_params, record["params"])
    elif kind == "metrics":
        ts = int(float(record.get("time", time.time())) * 1000)
        tracker._call(tracker._send_metrics, record["metrics"], record.get("step"), ts)
    elif kind == "artifact" and os.path.exists(record["path"]):
        tracker._call(tracker._send_artifact, record["path"], record.get("artifact_path"))
    elif kind == "tags":
        tracker._call(tracker._send_tags, record["tags"])


def _dispatch(tracker: Tracker, record: dict, spool: bool = True) -> None:
    if isinstance(tracker, MlflowTracker) and not spool:
        _send_record(tracker, record)
        return
    kind = record.get("type")
    if kind == "params":
        tracker.log_params(record["params"])
    elif kind == "metrics":
        metrics = {k: v for k, v in record["metrics"].items() if _is_number(v)}
        tracker.log_metrics(metrics, record.get("step"))
    elif kind == "artifact" and os.path.exists(record["path"]):
        tracker.log_artifact(record["path"], record.get("artifact_path"))
    elif kind == "tags":
        tracker.set_tags(record["tags"])


def replay(spool_path: str, tracker: Tracker) -> int:
    """Send the records of a spool file (a stage's JSON-lines log) to ``tracker``.

    Use it when a stage ran while MLflow was down. Artifacts are sent if their
    files still exist. The tracker is not closed.

    Returns:
      The number of records replayed.
    """
    n = 0
    with open(spool_path) as f:
        for line in f:
            if line.strip():
                _dispatch(tracker, json.loads(line))
                n += 1
    return n


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) < 200 else text[:200] + "…"


__all__ = ["MlflowTracker", "TrackingUnavailableWarning", "replay"]


def _stage_remote(path: str, tmp: str) -> str:
    """Copy a remote file, or every file of a remote folder, under ``tmp``."""
    from celo import storage

    local = os.path.join(tmp, path.rstrip("/").rsplit("/", 1)[-1])
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        children = storage.list_dir(path)
        if not children:
            raise
        os.makedirs(local, exist_ok=True)
        for child in children:
            with open(os.path.join(local, child), "wb") as f:
                f.write(storage.read_bytes(storage.join(path, child)))
        return local
    with open(local, "wb") as f:
        f.write(data)
    return local
