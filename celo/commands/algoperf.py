"""``celo algoperf``: AlgoPerf-lite runs, target calibration, and export for the real runner.

    celo algoperf run --submissions adam celo=tests/fixtures/checkpoints/celo/theta.state \\
        --output experiments/algoperf_lite
    celo algoperf calibrate --workloads fashion_mnist_cnn
    celo algoperf export --optimizer celo_adam=path/to/theta.state --output submissions/celo_adam

``run`` prints the time-to-target table and the performance-profile scores
(r_max = 4, relative to the pool) and writes ``OUTPUT/results.json`` and
``OUTPUT/table.md``. ``export`` writes a ``submission.py`` for AlgoPerf's
``submission_runner.py`` (see docs/algoperf.md).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "algoperf",
        help="run the AlgoPerf-lite workloads through the AlgoPerf submission API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="algoperf_command", metavar="ACTION", required=True)
    from celo.evaluation.algoperf.workloads import WORKLOADS

    r = sub.add_parser("run", help="a pool of submissions on the lite workloads, scored")
    r.add_argument(
        "--submissions",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="NAME (hand-designed, --lr) or NAME=theta.state / NAME=hf://repo",
    )
    r.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-steps", type=int, help="step limit (default: each workload's step_hint)")
    r.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate of hand-designed submissions (self-tuning: no search)",
    )
    r.add_argument(
        "--no-time-budget",
        action="store_true",
        help="run to the step limit even past the workload's time budget (comparable step "
        "counts on a shared machine; AlgoPerf itself stops at the budget)",
    )
    r.add_argument("--output", help="folder for results.json and table.md")
    r.add_argument("--data-dir")
    from celo.cli import add_tracking_args

    add_tracking_args(r)  # celo.cli.main turns these into args.tracker

    c = sub.add_parser("calibrate", help="set targets: NadamW sweep, median of best over seeds")
    c.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    c.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 3e-3, 1e-2])
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    c.add_argument("--optimizer", default="nadamw")
    c.add_argument("--data-dir")

    e = sub.add_parser("export", help="write submission.py (+ theta.state) for the real runner")
    e.add_argument("--optimizer", required=True, metavar="SPEC")
    e.add_argument("--lr", type=float, help="default learning rate of a hand-designed optimizer")
    e.add_argument("--output", required=True)
    return p


def run(args) -> int:
    from celo import storage
    from celo.evaluation.algoperf import lite
    from celo.evaluation.specs import parse_optimizer

    if args.algoperf_command == "export":
        spec = parse_optimizer(args.optimizer, [args.lr or 1e-3])
        print(lite.export(spec, args.output, args.lr))
        return 0
    if args.algoperf_command == "calibrate":
        out = [
            lite.calibrate(w, args.lrs, args.seeds, args.optimizer, args.data_dir)
            for w in args.workloads
        ]
        print(json.dumps(out, indent=1))
        return 0
    try:
        specs = [parse_optimizer(s, [args.lr]) for s in args.submissions]
    except ValueError as err:
        print(f"celo algoperf: {err}", file=sys.stderr)
        return 2
    result = lite.run_pool(
        specs,
        args.workloads,
        seed=args.seed,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        data_dir=args.data_dir,
        time_budget=not args.no_time_budget,
    )
    print()
    print(result["table"])
    tracker = getattr(args, "tracker", None)
    if tracker is not None:
        tracker.log_metrics(lite.metrics(result))
    if args.output:
        storage.write_bytes(
            storage.join(args.output, "results.json"), json.dumps(result, indent=1).encode()
        )
        table = storage.join(args.output, "table.md")
        storage.write_bytes(table, result["table"].encode())
        if tracker is not None:
            tracker.log_artifact(table, "algoperf")
    return 0
