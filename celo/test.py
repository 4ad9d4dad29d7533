"""Meta-test one optimizer on one task, with the reference's flags (spec §11.1).

    python -m celo.test --optimizer=celo --task=ImageMLP_FashionMnist_Relu128x128 \\
        --steps=1000 --exp_id=celo_released --experiment_root=experiments

A learned optimizer reads theta from ``<experiment_root>/train/<exp_id>/<ckpt_file>``;
a hand-designed one (``--optimizer_type=handcrafted``) uses ``--test_lr``.
The curves go to ``<experiment_root>/test/<exp_id>/<task>/seed_<seed>/metrics_unroll<steps>.npz``
with the reference's keys, plus a ``.json`` summary next to it.

Differences from the reference, on purpose: the run makes exactly ``steps``
updates (the reference makes ``steps + 1``); the ``task_name`` argument that
makes the reference crash is gone; results are not logged to Weights &
Biases (the W&B flags are accepted and ignored; use ``celo evaluate`` with a
tracker); ``--taskset`` and ``--test_reparam`` are accepted and unused, as in
the reference; `--metrics_every` is accepted (the curves record every step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from celo import storage


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m celo.test",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--optimizer", required=True)
    p.add_argument("--optimizer_type", choices=["learned", "handcrafted"], default="learned")
    p.add_argument("--task", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--exp_id", required=True)
    p.add_argument("--exp_name", default=None)
    p.add_argument("--ckpt_file", default="theta.state")
    p.add_argument("--experiment_root", default=os.environ.get("EXPERIMENT_ROOT", "./experiments"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics_every", type=int, default=10)
    p.add_argument("--test_lr", type=float, default=1e-3)
    p.add_argument("--data_dir", default=None)
    # Declared by the reference and unused there too.
    p.add_argument("--taskset", default=None)
    p.add_argument("--test_reparam", type=float, default=None)
    # W&B flags of the reference, accepted for command-line compatibility.
    p.add_argument("--disable_wandb", action="store_true")
    p.add_argument("--wandb_project", default=None)
    p.add_argument("--wandb_entity", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from celo.evaluation import cells, specs
    from celo.evaluation.inner_train import CurveConfig, CurveRunner
    from celo.tasks import get_task

    if args.optimizer_type == "learned":
        ckpt = storage.join(args.experiment_root, "train", args.exp_id, args.ckpt_file)
        spec = specs.OptimizerSpec(args.optimizer, args.optimizer, ckpt)
    else:
        spec = specs.OptimizerSpec(args.optimizer, args.optimizer, None, (args.test_lr,))
    if spec.learned != (args.optimizer_type == "learned"):
        print(f"{args.optimizer!r} is not a {args.optimizer_type} optimizer", file=sys.stderr)
        return 2
    build_opt, hps = specs.build(spec)
    task = get_task(args.task, data_dir=args.data_dir, seed=args.seed)
    config = CurveConfig(args.steps, seed=args.seed)  # eval every 10 steps, as the reference
    curve = CurveRunner(task, build_opt, config).run(next(iter(hps.values())), task.datasets)
    base = storage.join(
        args.experiment_root,
        "test",
        args.exp_id,
        args.task,
        f"seed_{args.seed}",
        f"metrics_unroll{args.steps}",
    )
    storage.write_bytes(base + ".npz", cells.npz_bytes(curve.arrays()))
    info = {
        "optimizer": spec.to_json(),
        "task": args.task,
        "exp_name": args.exp_name,
        "summary": curve.summary(),
    }
    storage.write_bytes(base + ".json", json.dumps(info, indent=1).encode())
    s = curve.summary()
    print(
        f"{args.task}: final train loss {s['final_train_loss']}, test loss "
        f"{s['final_eval']['test']}, {s['seconds_per_step'] * 1e3:.2f} ms/step"
        + (f", diverged at step {s['diverged_at']}" if s["diverged"] else "")
    )
    print(f"saved {base}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
