"""Run the compiled pipeline on this machine with ``kfp.local`` (``celo pipeline run --local``).

The committed YAML is loaded back with kfp and run by
``SubprocessRunner(use_venv=False)``: every stage is the same component code a
cluster runs, executed in this virtualenv. MLflow tracks into a sqlite store
(``./mlruns.db``, artifacts in ``./mlartifacts``) unless ``MLFLOW_TRACKING_URI``
points elsewhere; the stages inherit the URI through the environment.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Pipeline arguments of the presets (``celo_full.yaml`` parameter names).
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny everything: both phases, the small evaluation, AlgoPerf-lite, a dry-run publish.
    "smoke": {
        "phase1_preset": "smoke",
        "phase2_preset": "smoke_phase2",
        "eval_suite": "fast_velo",
        "eval_steps": 20,
        "eval_lrs": "0.001",
        "eval_workers": 1,
        "eval_reps": 200,
        "algoperf_workloads": "mnist",
        "algoperf_max_steps": 20,
        "publish": True,
        "publish_dry_run": True,
        "publish_repo_id": "local/celo-smoke",
        "model_alias": "smoke",
    },
    # The published recipes; days of CPU time, meant for an accelerator node.
    "full": {"publish": True, "publish_dry_run": True, "publish_repo_id": "local/celo"},
}


@dataclasses.dataclass
class LocalRun:
    """What a local pipeline run produced."""

    ok: bool
    seconds: float
    run_dir: str | None
    mlflow_uri: str
    mlflow_experiment: str
    parent_run_id: str | None = None
    error: str | None = None


def sqlite_uri(path: str) -> str:
    """``sqlite:///`` URI of a store file (absolute, so stages agree on it)."""
    return "sqlite:///" + os.path.abspath(path)


def pipeline_inputs(package: str) -> dict[str, dict[str, Any]]:
    """The root parameters of a compiled pipeline: name → ``{parameterType, defaultValue…}``."""
    import yaml

    with open(package) as f:
        spec = next(yaml.safe_load_all(f))
    return spec["root"].get("inputDefinitions", {}).get("parameters", {})


def _coerce(name: str, text: str, kind: str) -> Any:
    import yaml

    if kind == "STRING":
        return text
    if kind == "NUMBER_INTEGER":
        return int(text)
    if kind == "NUMBER_DOUBLE":
        return float(text)
    if kind == "BOOLEAN":
        value = yaml.safe_load(text)
        if not isinstance(value, bool):
            raise ValueError(f"{name} expects true or false, got {text!r}")
        return value
    if kind == "LIST":
        value = (
            yaml.safe_load(text)
            if text.lstrip().startswith("[")
            else [s.strip() for s in text.split(",") if s.strip()]
        )
        if not isinstance(value, list):
            raise ValueError(f"{name} expects a list, got {text!r}")
        return value
    return yaml.safe_load(text)


def parse_params(items: Sequence[str], package: str) -> dict[str, Any]:
    """``key=value`` strings → typed pipeline arguments, checked against the pipeline's inputs."""
    inputs = pipeline_inputs(package)
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        if key not in inputs:
            raise ValueError(
                f"{key!r} is not a parameter of {package}; parameters: " + ", ".join(sorted(inputs))
            )
        try:
            out[key] = _coerce(key, text, inputs[key]["parameterType"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{key}={text!r}: {e}") from e
    return out


def prepare_mlflow(uri: str, experiment: str, artifacts_dir: str) -> None:
    """Create the sqlite store's tables and the experiment, with artifacts in ``artifacts_dir``."""
    if not uri.startswith("sqlite:"):
        return  # a server keeps its own artifact store
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(
            experiment, artifact_location=Path(artifacts_dir).resolve().as_uri()
        )


def run_local(
    package: str,
    preset: str,
    overrides: dict[str, Any],
    *,
    pipeline_root: str,
    mlflow_uri: str,
    mlflow_experiment: str,
    artifacts_dir: str,
) -> LocalRun:
    """Run the compiled pipeline ``package`` locally with the preset's arguments."""
    from kfp import local
    from kfp.components import load_component_from_file

    arguments = {**PRESETS[preset], **overrides, "mlflow_experiment": mlflow_experiment}
    inputs = pipeline_inputs(package)
    arguments = {k: v for k, v in arguments.items() if k in inputs}
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri  # the stage subprocesses inherit it
    prepare_mlflow(mlflow_uri, mlflow_experiment, artifacts_dir)
    root = os.path.abspath(pipeline_root)
    os.makedirs(root, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=root, raise_on_error=True
    )
    pipeline = load_component_from_file(package)
    before = set(os.listdir(root))
    t0 = time.time()
    error = None
    try:
        with warnings.catch_warnings():
            # expected here: per-task cluster settings and the stage image are for a cluster
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            warnings.filterwarnings("ignore", message=".*non-Python base image")
            pipeline(**arguments)
    except Exception as e:  # noqa: BLE001 - reported with the run's outputs
        error = f"{type(e).__name__}: {e}"
    new = sorted(set(os.listdir(root)) - before)
    run_dir = os.path.join(root, new[-1]) if new else None
    parent = _parent_run(mlflow_uri, mlflow_experiment)
    if parent:
        defaults = {k: _default(v) for k, v in inputs.items()}
        _log_arguments(mlflow_uri, parent, {**defaults, **arguments, "preset": preset})
    return LocalRun(
        ok=error is None,
        seconds=time.time() - t0,
        run_dir=run_dir,
        mlflow_uri=mlflow_uri,
        mlflow_experiment=mlflow_experiment,
        parent_run_id=parent,
        error=error,
    )


def _default(spec: dict[str, Any]) -> Any:
    """A parameter's default as the pipeline types it (the YAML stores every number as a float)."""
    value = spec.get("defaultValue")
    if spec.get("parameterType") == "NUMBER_INTEGER" and value is not None:
        return int(value)
    return value


def _log_arguments(uri: str, run_id: str, arguments: dict[str, Any]) -> None:
    """The pipeline arguments as params of the parent run, for the MLflow comparison view."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        params = [Param(f"pipeline.{k}", str(v)) for k, v in sorted(arguments.items())]
        MlflowClient(tracking_uri=uri).log_batch(run_id, params=params)
    except Exception as e:  # noqa: BLE001 - the run itself is done; say so and go on
        print(f"could not log the pipeline arguments to MLflow: {e}")


def _parent_run(uri: str, experiment: str) -> str | None:
    try:
        from mlflow import MlflowClient

        from celo.tracking_mlflow import latest_pipeline_runs

        runs = latest_pipeline_runs(MlflowClient(tracking_uri=uri), experiment, 1)
        return runs[0].info.run_id if runs else None
    except Exception:  # noqa: BLE001 - only for the printout
        return None


def _find(run_dir: str | None, pattern: str) -> str | None:
    hits = (
        sorted(glob.glob(os.path.join(run_dir, "**", pattern), recursive=True)) if run_dir else []
    )
    return hits[0] if hits else None


def ui_command(uri: str) -> str:
    """The one command that opens the MLflow UI on the store the run used."""
    if uri.startswith("sqlite:"):
        exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
        if exe.startswith(os.getcwd() + os.sep):
            exe = os.path.relpath(exe)
        return f"{exe} ui --backend-store-uri {uri} --workers 1 --port 5000"
    return f"open {uri} in a browser"


def report(run: LocalRun) -> str:
    """What ``celo pipeline run --local`` prints: status, IQM table, outputs, MLflow."""
    from celo import comparison

    lines = [
        f"pipeline run {'succeeded' if run.ok else 'FAILED'} in {run.seconds:.0f} s; "
        f"task outputs in {run.run_dir}"
    ]
    if run.error:
        lines.append(f"error: {run.error}")
    summary = _find(run.run_dir, os.path.join("evaluate", "results", "summary.json"))
    if summary:
        lines += [
            "",
            "Evaluation (IQM over tasks, scores relative to LR-tuned Adam):",
            comparison.render(comparison.compare([os.path.dirname(summary)])),
        ]
    algoperf = _find(run.run_dir, os.path.join("algoperf-eval", "results", "*.md"))
    if algoperf:
        with open(algoperf) as f:
            lines += ["", f"AlgoPerf-lite ({os.path.basename(algoperf)}):", f.read().strip()]
    compared = _find(run.run_dir, os.path.join("compare", "comparison", "comparison.md"))
    if compared:
        with open(compared) as f:
            lines += ["", "Comparison of the checkpoints:", f.read().strip()]
    card = _find(run.run_dir, os.path.join("publish", "card"))
    if card:
        lines += ["", f"published (dry run) to {card}"]
    lines += [
        "",
        f"MLflow tracking URI: {run.mlflow_uri}",
        f"MLflow experiment: {run.mlflow_experiment}"
        + (f", pipeline run {run.parent_run_id}" if run.parent_run_id else ""),
        f"Open the MLflow UI: {ui_command(run.mlflow_uri)}",
    ]
    return "\n".join(lines)


__all__ = ["PRESETS", "LocalRun", "parse_params", "run_local", "report"]
