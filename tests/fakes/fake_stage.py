"""``celo fake_stage``: a stand-in stage command for tracker and CLI tests.

It behaves like a small meta-training run: logs its config, a ``meta_loss``
per step (sleeping between steps), writes ``OUT/theta.state`` and logs it as
the checkpoint artifact. ``OUT/progress`` holds the last finished step so that
a test can act (stop the tracking server) mid-run.
"""

from __future__ import annotations

import argparse
import os
import time

from celo.cli import add_tracking_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fake_stage", help="test stage")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--out", required=True)
    p.add_argument("--fail", action="store_true")
    add_tracking_args(p)
    return p


def run(args) -> int:
    os.makedirs(args.out, exist_ok=True)
    args.tracker.log_params({"steps": args.steps, "outer_lr": 3e-4})
    for step in range(args.steps):
        args.tracker.log_metrics({"meta_loss": 1.0 / (step + 1), "grad_norm": 0.5}, step=step)
        with open(os.path.join(args.out, "progress"), "w") as f:
            f.write(str(step))
        time.sleep(args.sleep)
    theta = os.path.join(args.out, "theta.state")
    with open(theta, "wb") as f:
        f.write(b"\x81\xa5theta\xc4\x04abcd")
    args.tracker.log_artifact(theta, "checkpoint")
    return 1 if args.fail else 0
