"""``celo train``: meta-train a learned optimizer (spec §10).

Examples::

    celo train --preset phase1
    celo train --preset phase2 --init_from_ckpt experiments/train/<phase-1 id>/theta.state
    celo train --preset smoke --exp_id smoke1 && celo train --preset smoke --exp_id smoke1 \\
        --outer_iterations 6 --resume
    celo train --optimizer rnn_mlp --task fast_velo --trainer pes --aug reparam --outer_lr 1e-4

Every flag of :class:`celo.meta.configs.TrainConfig` is accepted. A preset
sets defaults; flags given explicitly override them. Bad combinations are
reported before anything is loaded or compiled, naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from celo.meta import configs

#: The environment variable of the reference's ``--experiment_root`` default.
EXPERIMENT_ROOT_ENV = "EXPERIMENT_ROOT"


def _range(text: str) -> tuple[float, float]:
    parts = [float(x) for x in text.replace(",", " ").split()]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers 'lo,hi', got {text!r}")
    return parts[0], parts[1]


def _ranges(text: str) -> tuple[tuple[float, float], ...]:
    """``[[1e-3,1e3],[1e-2,1e2]]`` (JSON) or ``1e-3,1e3;1e-2,1e2``."""
    text = text.strip()
    if text.startswith("["):
        return tuple(tuple(float(x) for x in r) for r in json.loads(text))
    return tuple(_range(part) for part in text.split(";") if part.strip())


def _levels(text: str) -> tuple[str, ...]:
    text = text.strip()
    if text.startswith("["):
        return tuple(json.loads(text))
    return tuple(x.strip() for x in text.split(",") if x.strip())


_HELP = {
    "optimizer": "learned optimizer to meta-train (a get_optimizer name)",
    "task": "task family: fast_velo, fmnist, cifar10, fmnist+cifar10 or a task name",
    "trainer": "gradient estimator: pes, full_es or full_es_velo",
    "experiment_root": f"output root (default ${EXPERIMENT_ROOT_ENV} or ./experiments)",
    "exp_name": "run name used in the default exp_id",
    "exp_id": "run folder name (default {exp_name}_{%%y%%m%%d%%H}_lr{outer_lr}_seed{seed})",
    "init_from_ckpt": "theta.state to start from (leaves present in it are copied)",
    "init_ckpt_optimizer_name": "optimizer whose layout the init checkpoint has (partial loads)",
    "resume": "continue the run --exp_id from its trainer state",
    "train_partial": "train only the optimizer's trainable part (Celo phases)",
    "freeze_exact": "frozen leaves are neither perturbed nor weight-decayed (default); "
    "--no-freeze_exact reproduces the reference",
    "outer_lr": "AdamW learning rate",
    "outer_weight_decay": "AdamW decoupled weight decay",
    "outer_iterations": "number of outer updates",
    "ckpt_interval": "write theta_{i}.state and the trainer state every this many iterations",
    "metrics_every": "log metrics every this many iterations",
    "seed": "seed of theta's initialisation and of every random draw",
    "aug": "task augmentation: reparam or reparam_list",
    "aug_reparam_level": "reparam level: global, tensor or parameter",
    "aug_reparam_range": "log-uniform scale range 'lo,hi'",
    "aug_reparam_levels": "reparam_list levels, comma separated (none/global/tensor/parameter)",
    "aug_reparam_ranges": "reparam_list ranges, 'lo,hi;lo,hi' or JSON",
    "steps_per_jit": "inner steps per scanned chunk (trunc_length must be a multiple)",
    "num_tasks": "particles (inner problems per sign) per task family",
    "min_unroll_length": "shortest inner horizon",
    "max_unroll_length": "longest inner horizon",
    "trunc_length": "inner steps per PES window",
    "std": "PES perturbation standard deviation",
    "random_initial_iteration_offset": "stagger of the first trajectories "
    "(default max_unroll_length)",
    "num_devices": "devices to shard the particles over (default: all that divide num_tasks)",
    "data_dir": "data root (default $CELO_DATA_DIR, then the user cache)",
}

_TYPES = {
    "aug_reparam_range": _range,
    "aug_reparam_ranges": _ranges,
    "aug_reparam_levels": _levels,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every config field as a flag; unset flags stay absent so presets can fill them."""
    parser.add_argument(
        "--preset",
        choices=sorted(configs.PRESETS),
        help="start from a published recipe (explicit flags override it)",
    )
    parser.add_argument(
        "--metrics_jsonl",
        default=None,
        help="also append metrics to this JSON-lines file "
        "(default <exp dir>/metrics.jsonl for local runs)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    for field in dataclasses.fields(configs.TrainConfig):
        flag = f"--{field.name}"
        kw = dict(default=argparse.SUPPRESS, help=_HELP.get(field.name))
        if field.type in ("bool",) or isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if field.name in _TYPES:
            kw["type"] = _TYPES[field.name]
        elif isinstance(field.default, float) or field.name in ("outer_lr", "std"):
            kw["type"] = float
        elif isinstance(field.default, int) or field.name in (
            "random_initial_iteration_offset",
            "num_devices",
        ):
            kw["type"] = int
        parser.add_argument(flag, **kw)


def add_parser(subparsers) -> argparse.ArgumentParser:
    from celo.cli import add_tracking_args

    parser = subparsers.add_parser(
        "train",
        help="meta-train a learned optimizer with PES (phase 1, phase 2, baselines)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    add_tracking_args(parser)  # celo.cli.main turns these into args.tracker
    return parser


def config_from_args(args: argparse.Namespace, environ=None) -> configs.TrainConfig:
    """Preset (if any), then the explicitly given flags, then the environment defaults."""
    environ = os.environ if environ is None else environ
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(configs.TrainConfig)
        if hasattr(args, f.name)
    }
    if "experiment_root" not in given:
        given["experiment_root"] = environ.get(EXPERIMENT_ROOT_ENV) or "./experiments"
    preset = getattr(args, "preset", None)
    cfg = configs.PRESETS[preset](**given) if preset else configs.TrainConfig(**given)
    if preset in ("phase2", "smoke_phase2") and not cfg.init_from_ckpt:
        raise configs.ConfigError(
            "--init_from_ckpt",
            f"--preset {preset} starts from a phase-1 theta.state; pass its path",
        )
    return cfg


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = config_from_args(args)
        configs.validate(cfg)
    except configs.ConfigError as e:
        print(f"celo train: error: {e}", file=sys.stderr)
        return 2

    from celo import storage, tracking
    from celo.meta.trainer import Trainer

    # celo.cli.main owns (and closes) args.tracker; the local JSON-lines copy is ours.
    trackers = [getattr(args, "tracker", None)]
    jsonl = args.metrics_jsonl
    if jsonl is None and not storage.scheme(cfg.exp_dir()):
        jsonl = os.path.join(cfg.exp_dir(), "metrics.jsonl")
    local = tracking.JsonlTracker(jsonl) if jsonl else None
    trainer = Trainer(cfg, tracker=tracking.MultiTracker(*trackers, local))
    try:
        result = trainer.run()
    finally:
        if local is not None:
            local.close()
    summary = {
        "theta_path": result["theta_path"],
        "exp_dir": trainer.exp_dir,
        "timings": result["timings"],
        "metrics": result["metrics"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m celo.train ARGS`` is ``celo train ARGS``."""
    from celo.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])
