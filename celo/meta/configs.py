"""Meta-training configuration: one frozen dataclass, presets, and validation.

Every field is a ``celo train`` flag of the same name (spec §10.1). Presets are
functions whose docstring gives the exact command they stand for; explicit
flags override a preset's values.

:func:`validate` checks a configuration before anything is compiled or loaded
and raises :class:`ConfigError` naming the offending flag.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

from celo import storage

TRAINERS = ("pes", "full_es", "full_es_velo")
AUGMENTATIONS = ("reparam", "reparam_list")
REPARAM_LEVELS = ("global", "tensor", "parameter")
DEFAULT_REPARAM_LEVELS = ("none", "none", "global", "global", "tensor", "tensor", "parameter")
DEFAULT_REPARAM_RANGES = ((1e-3, 1e3), (1e-2, 1e2), (1e-1, 1e1))
TRAINER_STATE_FILE = "trainer_state.msgpack"


class ConfigError(ValueError):
    """A flag value, or a combination of flags, that cannot work.

    Attributes:
      flag: the flag to change, with its dashes (``--train_partial``).
    """

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"{flag}: {message}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All meta-training settings; defaults are the reference's (spec §10.1).

    Beyond the reference: ``freeze_exact`` (frozen leaves neither perturbed
    nor weight-decayed), ``std`` (PES σ), ``outer_weight_decay``,
    ``random_initial_iteration_offset`` (None: ``max_unroll_length``, as the
    reference), ``num_devices`` (None: all that divide ``num_tasks``) and
    ``data_dir``. ``outer_iterations`` is the number of outer updates (the
    reference makes one more, spec §15.1 item 14).
    """

    optimizer: str | None = None
    task: str | None = None
    trainer: str | None = None
    experiment_root: str = "./experiments"
    exp_name: str = "exp"
    exp_id: str | None = None
    init_from_ckpt: str | None = None
    init_ckpt_optimizer_name: str | None = None
    resume: bool = False
    train_partial: bool = False
    freeze_exact: bool = True
    outer_lr: float = 1e-4
    outer_weight_decay: float = 1e-4
    outer_iterations: int = 100_000
    ckpt_interval: int = 5000
    metrics_every: int = 50
    seed: int = 0
    aug: str | None = None
    aug_reparam_level: str = "global"
    aug_reparam_range: tuple[float, float] = (1e-3, 1e3)
    aug_reparam_levels: tuple[str, ...] = DEFAULT_REPARAM_LEVELS
    aug_reparam_ranges: tuple[tuple[float, float], ...] = DEFAULT_REPARAM_RANGES
    steps_per_jit: int = 10
    num_tasks: int = 8
    min_unroll_length: int = 100
    max_unroll_length: int = 2000
    trunc_length: int = 50
    std: float = 0.01
    random_initial_iteration_offset: int | None = None
    num_devices: int | None = None
    data_dir: str | None = None

    def resolved_exp_id(self, now: datetime.datetime | None = None) -> str:
        """``exp_id``, or the reference's ``{exp_name}_{%y%m%d%H}_lr{outer_lr}_seed{seed}``."""
        if self.exp_id:
            return self.exp_id
        stamp = (now or datetime.datetime.now()).strftime("%y%m%d%H")
        return f"{self.exp_name}_{stamp}_lr{self.outer_lr}_seed{self.seed}"

    def exp_dir(self) -> str:
        return storage.join(self.experiment_root, "train", self.resolved_exp_id())

    def offset(self) -> int:
        if self.random_initial_iteration_offset is None:
            return int(self.max_unroll_length)
        return int(self.random_initial_iteration_offset)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# -- presets ----------------------------------------------------------------------------------
def phase1(**overrides) -> TrainConfig:
    """Celo phase 1: train the per-parameter MLP, the scheduler frozen (README recipe).

    ``celo train --optimizer celo_phase1 --train_partial --trainer pes --task fast_velo
    --aug reparam --aug_reparam_level global --outer_lr 3e-4 --outer_iterations 100000
    --max_unroll_length 2000 --seed 0`` (or ``celo train --preset phase1``).
    """
    base = dict(
        optimizer="celo_phase1",
        task="fast_velo",
        trainer="pes",
        train_partial=True,
        aug="reparam",
        aug_reparam_level="global",
        outer_lr=3e-4,
        outer_iterations=100_000,
        max_unroll_length=2000,
        seed=0,
        exp_name="celo_phase1",
    )
    return TrainConfig(**{**base, **overrides})


def phase2(**overrides) -> TrainConfig:
    """Celo phase 2: train the scheduler on top of the phase-1 MLP (README recipe).

    ``celo train --optimizer celo --train_partial --trainer pes --task fast_velo
    --aug reparam --aug_reparam_level global --outer_lr 3e-4 --outer_iterations 100000
    --max_unroll_length 2000 --seed 0 --init_from_ckpt <phase-1 dir>/theta.state``
    (or ``celo train --preset phase2 --init_from_ckpt <phase-1 dir>/theta.state``).
    """
    return phase1(**{"optimizer": "celo", "exp_name": "celo_phase2", **overrides})


def smoke(**overrides) -> TrainConfig:
    """Phase 1 shrunk to a few seconds of compute, for CI and a first try.

    ``celo train --preset smoke`` = ``celo train --optimizer celo_phase1 --train_partial
    --trainer pes --task fast_velo --aug reparam --outer_lr 3e-4 --outer_iterations 4
    --num_tasks 2 --trunc_length 10 --steps_per_jit 5 --min_unroll_length 15
    --max_unroll_length 40 --ckpt_interval 2 --metrics_every 2 --exp_name smoke``.
    """
    base = dict(
        outer_iterations=4,
        num_tasks=2,
        trunc_length=10,
        steps_per_jit=5,
        min_unroll_length=15,
        max_unroll_length=40,
        ckpt_interval=2,
        metrics_every=2,
        exp_name="smoke",
    )
    return phase1(**{**base, **overrides})


def smoke_phase2(**overrides) -> TrainConfig:
    """The smoke run's phase 2 (needs the smoke phase-1 theta).

    ``celo train --preset smoke_phase2 --init_from_ckpt <smoke phase-1 dir>/theta.state``.
    """
    return smoke(**{"optimizer": "celo", "exp_name": "smoke_phase2", **overrides})


PRESETS: dict[str, Callable[..., TrainConfig]] = {
    "phase1": phase1,
    "phase2": phase2,
    "smoke": smoke,
    "smoke_phase2": smoke_phase2,
}


# -- validation --------------------------------------------------------------------------------
def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name}", f"must be positive, got {getattr(cfg, name)}")


def _check_range(flag: str, rng) -> None:
    if len(rng) != 2 or not 0 < rng[0] <= rng[1]:
        raise ConfigError(flag, f"needs two numbers 0 < lo <= hi, got {list(rng)}")


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for the first problem found; compiles and loads nothing.

    Checks names (optimizer, task, trainer, augmentation), numeric ranges,
    the truncation settings, ``--train_partial`` against the optimizer's
    frozen keys, and that the files named by ``--init_from_ckpt`` and
    ``--resume`` exist.
    """
    from celo.factory import UnknownOptimizerError, get_optimizer, is_learned
    from celo.tasks import family_names

    for flag in ("optimizer", "task", "trainer"):
        if not getattr(cfg, flag):
            raise ConfigError(f"--{flag}", "is required (or use --preset phase1|phase2|smoke)")
    try:
        learned = is_learned(cfg.optimizer)
    except UnknownOptimizerError as e:
        raise ConfigError("--optimizer", str(e)) from None
    if not learned:
        raise ConfigError(
            "--optimizer",
            f"{cfg.optimizer!r} is hand-designed; only learned "
            "optimizers have meta-parameters to train",
        )
    if cfg.task not in family_names():
        raise ConfigError(
            "--task",
            f"unknown task {cfg.task!r}; valid: fast_velo, fmnist, "
            "cifar10, fmnist+cifar10 or any task name",
        )
    if cfg.trainer not in TRAINERS:
        raise ConfigError("--trainer", f"must be one of {', '.join(TRAINERS)}, got {cfg.trainer!r}")
    _positive(
        cfg,
        "outer_lr",
        "outer_iterations",
        "ckpt_interval",
        "metrics_every",
        "steps_per_jit",
        "num_tasks",
        "min_unroll_length",
        "max_unroll_length",
        "trunc_length",
        "std",
    )
    if cfg.outer_weight_decay < 0:
        raise ConfigError("--outer_weight_decay", "must be >= 0")
    if cfg.min_unroll_length > cfg.max_unroll_length:
        raise ConfigError(
            "--min_unroll_length",
            f"{cfg.min_unroll_length} exceeds --max_unroll_length {cfg.max_unroll_length}",
        )
    if cfg.trunc_length % cfg.steps_per_jit:
        raise ConfigError(
            "--trunc_length",
            f"{cfg.trunc_length} is not a multiple of --steps_per_jit {cfg.steps_per_jit}",
        )
    if cfg.offset() < 0:
        raise ConfigError("--random_initial_iteration_offset", "must be >= 0")
    if cfg.num_devices is not None and cfg.num_devices < 1:
        raise ConfigError("--num_devices", "must be >= 1")
    if cfg.num_devices is not None and cfg.num_tasks % cfg.num_devices:
        raise ConfigError(
            "--num_devices",
            f"{cfg.num_devices} devices cannot share --num_tasks {cfg.num_tasks} particles evenly",
        )
    if cfg.aug is not None and cfg.aug not in AUGMENTATIONS:
        raise ConfigError("--aug", f"must be one of {', '.join(AUGMENTATIONS)}, got {cfg.aug!r}")
    if cfg.aug_reparam_level not in REPARAM_LEVELS:
        raise ConfigError("--aug_reparam_level", f"must be one of {', '.join(REPARAM_LEVELS)}")
    _check_range("--aug_reparam_range", cfg.aug_reparam_range)
    bad = [lvl for lvl in cfg.aug_reparam_levels if lvl not in (*REPARAM_LEVELS, "none")]
    if bad or not cfg.aug_reparam_levels:
        raise ConfigError(
            "--aug_reparam_levels",
            f"entries must be none/global/tensor/parameter, got {list(cfg.aug_reparam_levels)}",
        )
    for rng in cfg.aug_reparam_ranges:
        _check_range("--aug_reparam_ranges", rng)

    lopt = get_optimizer(cfg.optimizer)
    if cfg.train_partial and not lopt.get_frozen_param_keys():
        raise ConfigError(
            "--train_partial",
            f"optimizer {cfg.optimizer!r} has no frozen keys; "
            "only celo and celo_phase1 support partial training",
        )
    if cfg.init_ckpt_optimizer_name and not cfg.init_from_ckpt:
        raise ConfigError("--init_ckpt_optimizer_name", "needs --init_from_ckpt")
    if cfg.init_ckpt_optimizer_name:
        try:
            is_learned(cfg.init_ckpt_optimizer_name)
        except UnknownOptimizerError as e:
            raise ConfigError("--init_ckpt_optimizer_name", str(e)) from None
    if cfg.init_from_ckpt and not storage.exists(cfg.init_from_ckpt):
        raise ConfigError("--init_from_ckpt", f"no checkpoint at {cfg.init_from_ckpt}")
    if cfg.resume:
        if not cfg.exp_id:
            raise ConfigError("--resume", "needs --exp_id (the run to continue)")
        path = storage.join(cfg.exp_dir(), TRAINER_STATE_FILE)
        if not storage.exists(path):
            raise ConfigError("--resume", f"no trainer state at {path}")
