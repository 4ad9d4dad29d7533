"""The ``celo`` command line.

Each subcommand lives in its own module under :mod:`celo.commands` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs, so ``celo --help`` stays fast. The CLI is the only
place that reads environment variables and wires trackers and storage into the
library.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys

from celo.stages import checkpoint_spec, run_stage, theta_in  # noqa: F401  (the pipeline components' entry points)

#: subcommand → module in celo.commands (added as the components land).
COMMANDS: dict[str, str] = {
    "train": "celo.commands.train",
    "evaluate": "celo.commands.evaluate",
    "algoperf": "celo.commands.algoperf",
    "publish": "celo.commands.publish",
    "pipeline": "celo.commands.pipeline",
}

DESCRIPTIONS: dict[str, str] = {
    "train": "meta-train a learned optimizer with PES (phase 1, phase 2, baselines)",
    "evaluate": "evaluate optimizers on a task suite and score them against tuned Adam",
    "algoperf": "run the AlgoPerf-lite workloads through the AlgoPerf submission API",
    "publish": "publish a checkpoint with its model card to the Hugging Face Hub",
    "pipeline": "compile, run locally, submit or schedule the Kubeflow pipeline",
}


def _available() -> dict[str, str]:
    out = {}
    for name, module in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = module
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celo", description="Celo: compute-efficient learned optimizers in JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available().items():
        if only is not None and name != only:
            sub.add_parser(name, help=DESCRIPTIONS.get(name), add_help=False)
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


#: Environment variables whose values must never be logged.
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|API_KEY", re.I)
_TRACKING_DESTS = (
    "mlflow_uri",
    "mlflow_experiment",
    "pipeline_run_id",
    "stage",
    "tracking_log",
    "register_model",
    "model_alias",
)


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    """Add the tracking flags to a subcommand; :func:`main` then builds ``args.tracker``.

    Every flag is optional. MLflow is used when ``--mlflow-uri`` or
    ``MLFLOW_TRACKING_URI`` names a tracking server or store.
    """
    g = parser.add_argument_group("tracking")
    g.add_argument(
        "--mlflow-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; 'none' disables)",
    )
    g.add_argument(
        "--mlflow-experiment",
        default=None,
        help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else 'celo')",
    )
    g.add_argument(
        "--pipeline-run-id",
        default=None,
        help="KFP run id: the stage becomes a child of that pipeline run's MLflow run",
    )
    g.add_argument("--stage", default=None, help="MLflow run name of this stage")
    g.add_argument(
        "--tracking-log",
        default=None,
        metavar="PATH",
        help="JSON-lines log of everything tracked (kept when MLflow is unreachable)",
    )
    g.add_argument(
        "--register-model",
        default=None,
        metavar="NAME",
        help="register the final theta.state as a version of this MLflow model",
    )
    g.add_argument("--model-alias", default=None, help="alias of that model version")


def tracker_from_args(args: argparse.Namespace, env: dict[str, str] | None = None):
    """The :class:`~celo.tracking.Tracker` for a parsed command line and environment."""
    from celo.tracking import make_tracker

    env = dict(os.environ if env is None else env)
    secrets = tuple(v for k, v in env.items() if _SECRET_ENV.search(k) and v)
    return make_tracker(
        mlflow_uri=args.mlflow_uri or env.get("MLFLOW_TRACKING_URI"),
        experiment=args.mlflow_experiment or env.get("MLFLOW_EXPERIMENT_NAME") or "celo",
        stage=args.stage or args.command,
        pipeline_run_id=args.pipeline_run_id,
        log_path=args.tracking_log,
        register_model=args.register_model,
        model_alias=args.model_alias,
        secrets=secrets,
    )


def _cli_params(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for key, value in sorted(vars(args).items()):
        if key in _TRACKING_DESTS or key == "tracker" or callable(value):
            continue
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        out[f"cli.{key}"] = "***" if _SECRET_ENV.search(key) else text
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(_available()[args.command])
    if not hasattr(args, "mlflow_uri"):  # the command has no tracking flags
        return int(module.run(args) or 0)
    args.tracker = tracker = tracker_from_args(args)
    tracker.set_tags({"celo.command": args.command})
    tracker.log_params(_cli_params(args))
    status = "FAILED"
    try:
        rc = int(module.run(args) or 0)
        status = "FINISHED" if rc == 0 else "FAILED"
        return rc
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close(status)


if __name__ == "__main__":
    sys.exit(main())
