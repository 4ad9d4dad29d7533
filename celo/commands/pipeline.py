"""``celo pipeline``: compile, run locally, submit, schedule and compare.

    celo pipeline compile [--target cpu|gpu|tpu|all] [--check]
    celo pipeline run --local --preset smoke            # the whole DAG on this machine
    celo pipeline submit --host $KFP -e celo -f pipelines/celo_full_gpu.yaml publish=true
    celo pipeline schedule --host $KFP --cron "0 0 3 * * 1" \
        --checkpoints amoudgl/celo,amoudgl/celo-adam
    celo pipeline compare --results DIR [DIR ...] --output DIR

``run --local`` runs the committed ``pipelines/celo_full.yaml`` with
``kfp.local.SubprocessRunner(use_venv=False)``; without ``MLFLOW_TRACKING_URI``
it tracks into ``./mlruns.db`` (sqlite) with artifacts under ``./mlartifacts``.
``submit`` and ``schedule`` talk to a KFP v2 API (``--host`` or
``$KF_PIPELINES_ENDPOINT``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from celo.cli import add_tracking_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pipeline",
        help="compile, run locally, submit or schedule the Kubeflow pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = sub.add_parser("compile", help="compile pipelines/*.py to the committed YAML")
    c.add_argument("--target", default="all", choices=["all", "cpu", "gpu", "tpu"])
    c.add_argument("--check", action="store_true", help="exit 1 if a committed file drifted")

    r = sub.add_parser("run", help="run the pipeline (locally, with kfp.local)")
    r.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="run on this machine (cluster runs go through `submit`)",
    )
    r.add_argument("--preset", default="smoke", choices=["smoke", "full"])
    r.add_argument("-f", "--package", default="pipelines/celo_full.yaml")
    r.add_argument("--pipeline-root", default="local_outputs", help="where task outputs go")
    r.add_argument(
        "--mlflow-store",
        default="mlruns.db",
        help="sqlite store used when MLFLOW_TRACKING_URI is unset",
    )
    r.add_argument("--mlflow-artifacts", default="mlartifacts")
    r.add_argument(
        "--mlflow-experiment",
        default=None,
        help="default: 'celo-smoke' for the smoke preset, 'celo' for full",
    )
    r.add_argument("params", nargs="*", metavar="KEY=VALUE", help="pipeline parameter overrides")

    for name, helptext in (
        ("submit", "submit one run to a KFP v2 API"),
        ("schedule", "create the recurring re-evaluation run"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--host", default=None, help="KFP API endpoint ($KF_PIPELINES_ENDPOINT)")
        s.add_argument(
            "-e",
            "--experiment",
            default="celo" if name == "submit" else "celo-reeval",
            help="KFP experiment",
        )
        s.add_argument(
            "-f",
            "--package",
            default=None,
            help="compiled pipeline (default: pipelines/celo_full.yaml, or "
            "pipelines/reeval.yaml for schedule)",
        )
        s.add_argument("-r", "--run-name", default=None)
        s.add_argument(
            "--service-account",
            default=None,
            help="Kubernetes ServiceAccount the run's pods use (e.g. celo-pipeline)",
        )
        s.add_argument(
            "params",
            nargs="*",
            metavar="KEY=VALUE",
            help="pipeline parameters, typed from the pipeline's inputs",
        )
    sub.choices["submit"].add_argument("--no-cache", action="store_true")
    sch = sub.choices["schedule"]
    sch.add_argument(
        "--cron",
        required=True,
        help="6-field cron, seconds first (weekly Monday 03:00: '0 0 3 * * 1')",
    )
    sch.add_argument(
        "--checkpoints", required=True, help="comma-separated owner/repo, hf://… or NAME=URI specs"
    )
    sch.add_argument(
        "--mlflow-experiment-name",
        default="celo-reeval",
        help="MLflow experiment the scheduled runs log to",
    )
    sch.add_argument("--max-concurrency", type=int, default=1)
    sch.add_argument("--disabled", action="store_true", help="create it paused")
    sch.add_argument(
        "--replace",
        action="store_true",
        help="replace a recurring run of the same name in the experiment (default: keep it "
        "and create nothing, so re-applying a schedule never duplicates it)",
    )

    cmp_ = sub.add_parser("compare", help="one IQM table from several evaluation folders")
    cmp_.add_argument("--results", nargs="+", required=True, metavar="DIR")
    cmp_.add_argument("--output", required=True, metavar="DIR")
    add_tracking_args(cmp_)
    return p


def run(args) -> int:
    return {
        "compile": _compile,
        "run": _run_local,
        "submit": _submit,
        "schedule": _schedule,
        "compare": _compare,
    }[args.action](args)


def _repo_root() -> str | None:
    here = os.path.abspath(os.getcwd())
    while True:
        if os.path.isfile(os.path.join(here, "pipelines", "compile.py")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _compile(args) -> int:
    # pipelines/ is not part of the package (nothing in celo imports it): run it as a script.
    root = _repo_root()
    if root is None:
        print(
            "celo pipeline compile: run it inside a checkout (pipelines/compile.py not found)",
            file=sys.stderr,
        )
        return 2
    cmd = [sys.executable, "-m", "pipelines.compile", "--target", args.target]
    return subprocess.call(cmd + (["--check"] if args.check else []), cwd=root)


def _run_local(args) -> int:
    from celo import local_run

    env = dict(os.environ)
    experiment = args.mlflow_experiment or ("celo-smoke" if args.preset == "smoke" else "celo")
    try:
        overrides = local_run.parse_params(args.params, args.package)
    except ValueError as e:
        print(f"celo pipeline run: {e}", file=sys.stderr)
        return 2
    uri = env.get("MLFLOW_TRACKING_URI") or local_run.sqlite_uri(args.mlflow_store)
    result = local_run.run_local(
        args.package,
        args.preset,
        overrides,
        pipeline_root=args.pipeline_root,
        mlflow_uri=uri,
        mlflow_experiment=experiment,
        artifacts_dir=args.mlflow_artifacts,
    )
    print(local_run.report(result))
    return 0 if result.ok else 1


def _client(host: str | None):
    import kfp

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise SystemExit("celo pipeline: give --host or set KF_PIPELINES_ENDPOINT")
    return kfp.Client(host=host)


def _submit(args) -> int:
    from celo import local_run

    package = args.package or "pipelines/celo_full.yaml"
    try:
        params = local_run.parse_params(args.params, package)
    except ValueError as e:
        print(f"celo pipeline submit: {e}", file=sys.stderr)
        return 2
    result = _client(args.host).create_run_from_pipeline_package(
        package,
        arguments=params,
        run_name=args.run_name,
        experiment_name=args.experiment,
        enable_caching=False if args.no_cache else None,
        service_account=args.service_account,
    )
    print(f"submitted run {result.run_id} to experiment {args.experiment!r}")
    return 0


def _schedule(args) -> int:
    from celo import local_run

    fields = args.cron.split()
    if len(fields) != 6:
        print(
            f"celo pipeline schedule: KFP cron has 6 fields, seconds first (weekly Monday "
            f"03:00 is '0 0 3 * * 1'); got {len(fields)} in {args.cron!r}",
            file=sys.stderr,
        )
        return 2
    package = args.package or "pipelines/reeval.yaml"
    try:
        params = local_run.parse_params(args.params, package)
    except ValueError as e:
        print(f"celo pipeline schedule: {e}", file=sys.stderr)
        return 2
    params["checkpoints"] = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    params["mlflow_experiment"] = args.mlflow_experiment_name
    client = _client(args.host)
    experiment = client.create_experiment(name=args.experiment)  # returns an existing one
    name = args.run_name or "celo-reeval"
    existing = _recurring_runs_named(client, experiment.experiment_id, name)
    if existing and not args.replace:
        print(
            f"recurring run {name!r} already exists in experiment {args.experiment!r} "
            f"({existing[0].recurring_run_id}); nothing created (use --replace to update it)"
        )
        return 0
    for old in existing:
        client.delete_recurring_run(old.recurring_run_id)
        print(f"deleted recurring run {old.recurring_run_id} ({name!r}) to replace it")
    job = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=name,
        service_account=args.service_account,
        cron_expression=args.cron,
        pipeline_package_path=package,
        params=params,
        enabled=not args.disabled,
        max_concurrency=args.max_concurrency,
        no_catchup=True,
    )
    print(
        f"created recurring run {job.recurring_run_id} ({args.cron}) in experiment "
        f"{args.experiment!r} for {len(params['checkpoints'])} checkpoint(s)"
    )
    return 0


def _recurring_runs_named(client, experiment_id: str, name: str) -> list:
    """Recurring runs of ``experiment_id`` whose display name is ``name`` (all pages)."""
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(
            experiment_id=experiment_id, page_token=token, page_size=100
        )
        found += [r for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return found


def _compare(args) -> int:
    from celo import comparison

    table = comparison.compare(args.results, args.output, tracker=args.tracker)
    print(comparison.render(table))
    for failure in table["failed"]:
        print(f"FAILED {failure['source']}: {failure['error']}", file=sys.stderr)
    if table["failed"]:
        print(
            f"{len(table['failed'])} of {len(args.results)} evaluation(s) failed; the others "
            "are compared above",
            file=sys.stderr,
        )
        return 1
    return 0
