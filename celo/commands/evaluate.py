"""``celo evaluate``: score optimizers against learning-rate-tuned Adam on a task suite.

    celo evaluate --optimizers celo=tests/fixtures/checkpoints/celo/theta.state adam sgdm \\
        --suite velodrome17_small --seeds 0 --output experiments/eval_small

Writes ``OUTPUT/summary.json`` (per optimizer: ``iqm_final_loss``, ``iqm_speedup``,
their 95% CIs, per-task ``final_loss_score`` and ``speedup_score``), one curve
per (optimizer, task, seed) under ``OUTPUT/curves``, every sweep run under
``OUTPUT/cells``, ``OUTPUT/reference_adam.json``, ``OUTPUT/tables.md`` and PNG
plots under ``OUTPUT/plots``. Rerunning the command resumes: finished cells are
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate optimizers on a task suite and score them against tuned Adam",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--optimizers",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="NAME (hand-designed, tuned over --lrs), NAME@LR,LR,... (tuned over its own "
        "grid), NAME=theta.state, NAME=hf://owner/repo, or LABEL:NAME=CHECKPOINT",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="velodrome17, velodrome17_small or fast_velo")
    which.add_argument("--tasks", nargs="+", help="task names (celo.tasks.task_names())")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, help="horizon of every task (default: the suite's)")
    p.add_argument("--output", required=True, help="results folder (local or gs://); resumable")
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        help="learning-rate grid of the hand-designed optimizers given without their own "
        "(default: the suite's; half-decades 1e-5…1 for full suites)",
    )
    p.add_argument(
        "--reference", default="adam", help="the tuned reference optimizer (default adam)"
    )
    p.add_argument("--workers", type=int, help="worker processes (default: up to 2, one per core)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-batches", type=int, default=5)
    p.add_argument("--last-eval-batches", type=int, default=10)
    p.add_argument("--data-dir", help="data root (default: $CELO_DATA_DIR, then the user cache)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap repetitions for the CIs")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: score the finished cells of OUTPUT (works while a run is going on)",
    )
    p.add_argument(
        "--report-dir", help="write summary.json, tables.md and plots here instead of OUTPUT"
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--compile-cache",
        default="auto",
        help="JAX persistent compilation cache folder ('auto': OUTPUT/.jax_cache for "
        "local outputs; 'none' disables it); makes resumed runs start faster",
    )
    from celo.cli import add_tracking_args

    add_tracking_args(p)  # celo.cli.main turns these into args.tracker
    return p


def _compile_cache(args) -> str | None:
    if args.compile_cache == "none":
        return None
    if args.compile_cache == "auto":
        return None if "://" in args.output else os.path.join(args.output, ".jax_cache")
    return args.compile_cache


def run(args) -> int:
    from celo.evaluation import benchmark, executor, specs
    from celo.tasks import get_suite
    from celo.tracking import NoopTracker

    lrs = tuple(args.lrs) if args.lrs else benchmark.default_lrs(args.suite)
    try:
        opts = [specs.parse_optimizer(s, lrs) for s in args.optimizers]
        if not args.report_only:
            for spec in opts:
                specs.check_checkpoint(spec)
    except ValueError as e:
        print(f"celo evaluate: {e}", file=sys.stderr)
        return 2
    tasks = get_suite(args.suite) if args.suite else list(args.tasks)
    env = dict(os.environ)
    cache = _compile_cache(args)
    if cache:
        import jax

        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    tracker = getattr(args, "tracker", None) or NoopTracker()
    summary = benchmark.evaluate(
        opts,
        tasks,
        args.seeds,
        args.output,
        suite=args.suite,
        steps=args.steps,
        schedule=benchmark.EvalSchedule(args.eval_every, args.eval_batches, args.last_eval_batches),
        workers=args.workers or executor.default_workers(),
        reference=args.reference,
        reference_lrs=lrs,
        data_dir=args.data_dir,
        tracker=tracker,
        progress=not args.no_progress,
        make_plots=not args.no_plots,
        reps=args.reps,
        worker_env=env,
        report_only=args.report_only,
        report_dir=args.report_dir,
    )
    _print(summary)
    errors = summary["run"]["errors"]
    if errors:
        print(f"{len(errors)} cell(s) failed; rerun the command to retry them", file=sys.stderr)
    return 1 if errors else 0


def _print(summary: dict) -> None:
    print(f"tasks aggregated: {len(summary['tasks_aggregated'])}/{len(summary['tasks'])}")
    for label, o in summary["optimizers"].items():
        if "iqm_final_loss" in o:
            print(
                f"{label:>12}: IQM final-loss {o['iqm_final_loss']:.3f} "
                f"{json.dumps([round(x, 3) for x in o['iqm_final_loss_ci']])}  "
                f"IQM speedup {o['iqm_speedup']:.3f} "
                f"{json.dumps([round(x, 3) for x in o['iqm_speedup_ci']])}"
            )
