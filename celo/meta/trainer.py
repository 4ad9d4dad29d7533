"""The meta-training loop: the one impure part of :mod:`celo.meta`.

:func:`build` turns a :class:`~celo.meta.configs.TrainConfig` into runtime
objects (optimizer, augmented task families grouped by shape, device-resident
data, estimators, the :class:`~celo.meta.learner.MetaLearner`, the device
mesh). :class:`Trainer` runs the outer loop: one compiled call per outer
iteration, metrics to a :class:`~celo.tracking.Tracker`, checkpoints and the
resumable state through :mod:`celo.meta.checkpointing`.

Random numbers use JAX's non-partitionable threefry (``jax.threefry_partitionable(False)``
while tracing): it is as good a generator, it compiles about four times
faster when many small draws are vmapped (task initialisations), and it is
what learned_optimization ran with.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from celo import checkpoints, storage
from celo.meta import checkpointing, pes
from celo.meta.batches import resident_data
from celo.meta.configs import TrainConfig, validate
from celo.meta.estimators import AXIS, FullES, TruncatedPES
from celo.meta.groups import group_families
from celo.meta.learner import LearnerState, MetaLearner
from celo.meta.schedules import NeverEndingTruncationSchedule, make_schedule
from celo.meta.truncated_step import VectorizedTruncatedStep
from celo.tracking import NoopTracker, Tracker
from celo.utils import load_from_pretrained

log = logging.getLogger(__name__)

#: Compile options for programs that run once (initialisation): cheap to build. Level 1
#: still gives bitwise the values of op-by-op execution (level 0 moves truncated
#: normals by an ulp), so ``theta0`` is exactly ``lopt.init(PRNGKey(seed))``.
ONE_SHOT_COMPILE = {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True}
#: Compile options of the inner-problem initialisation: runs once, any exact value is fine.
INIT_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
#: Compile options of the outer iteration. LLVM at -O1 instead of -O3 cuts XLA's
#: compile time by about a quarter, and the step (elementwise loops, tiny matmuls)
#: runs as fast: measured 0.32–0.34 s against 0.37–0.40 s per phase-1 iteration.
STEP_COMPILE = {"xla_backend_optimization_level": 1}


@dataclasses.dataclass
class Setup:
    """Runtime objects built from a config."""

    lopt: Any
    families: list
    learner: MetaLearner
    data: tuple
    theta0: jnp.ndarray
    mesh: Mesh | None
    inner_steps_per_iteration: int


def augment(cfg: TrainConfig, family):
    """Wrap a family in the configured weight reparameterisation (spec §10.8)."""
    from celo.tasks import ReparamWeightsFamily, ReparamWeightsListFamily

    if cfg.aug == "reparam":
        return ReparamWeightsFamily(family, cfg.aug_reparam_level, tuple(cfg.aug_reparam_range))
    if cfg.aug == "reparam_list":
        return ReparamWeightsListFamily(
            family, tuple(cfg.aug_reparam_levels), [tuple(r) for r in cfg.aug_reparam_ranges]
        )
    return family


def one_shot(fn, *args):
    """``fn(*args)`` as one cheaply compiled program (op-by-op dispatch compiles every op)."""
    return jax.jit(fn).lower(*args).compile(compiler_options=ONE_SHOT_COMPILE)(*args)


def make_mesh(num_particles: int, num_devices: int | None = None) -> Mesh | None:
    """A 1-D mesh over the particle axis: the most devices that divide ``num_particles``."""
    devices = jax.devices()
    n = num_devices or max(d for d in range(1, len(devices) + 1) if num_particles % d == 0)
    if n > len(devices):
        raise ValueError(f"--num_devices {n}: only {len(devices)} devices are visible")
    return None if n == 1 else Mesh(np.array(devices[:n]), (AXIS,))


def initial_theta(cfg: TrainConfig, lopt) -> Any:
    """``lopt.init(PRNGKey(seed))``, with ``--init_from_ckpt`` leaves copied in (spec §10.9)."""
    from celo.factory import get_optimizer

    key = jax.random.PRNGKey(cfg.seed)
    theta = one_shot(lopt.init, key)
    if cfg.init_from_ckpt:
        source = (
            get_optimizer(cfg.init_ckpt_optimizer_name) if cfg.init_ckpt_optimizer_name else lopt
        )
        pretrained = checkpoints.load_state(cfg.init_from_ckpt, one_shot(source.init, key))
        theta = load_from_pretrained(theta, pretrained)
    return theta


def build(cfg: TrainConfig) -> Setup:
    """Everything the loop needs; loads data, compiles nothing."""
    from celo.factory import get_optimizer
    from celo.tasks import get_task_families

    lopt = get_optimizer(cfg.optimizer)
    families = [
        augment(cfg, f) for f in get_task_families(cfg.task, data_dir=cfg.data_dir, seed=cfg.seed)
    ]
    theta = initial_theta(cfg, lopt)
    flat, unravel = ravel_pytree(theta)
    mask = None
    if cfg.train_partial:
        mask = pes.flat_mask(theta, pes.trainable_mask(theta, lopt.get_frozen_param_keys()))
    # Reference behaviour perturbs frozen leaves too; only the exact mode spares them.
    noise_mask = mask if cfg.freeze_exact else None
    mesh = make_mesh(cfg.num_tasks, cfg.num_devices)

    estimators, names, data = [], [], []
    inner_steps = 0
    for idx in group_families(families):
        group = [families[i] for i in idx]
        common = dict(
            unravel=unravel,
            num_families=len(group),
            num_particles=cfg.num_tasks,
            std=cfg.std,
            steps_per_jit=cfg.steps_per_jit,
            mask=noise_mask,
        )
        if cfg.trainer == "pes":
            step = VectorizedTruncatedStep(
                group[0],
                lopt,
                make_schedule(cfg.min_unroll_length, cfg.max_unroll_length),
                cfg.offset(),
            )
            est = TruncatedPES(step, trunc_length=cfg.trunc_length, **common)
            inner_steps += 2 * len(group) * cfg.num_tasks * cfg.trunc_length
        else:
            hi = 10_000 if cfg.trainer == "full_es_velo" else cfg.max_unroll_length
            step = VectorizedTruncatedStep(group[0], lopt, NeverEndingTruncationSchedule())
            est = FullES(
                step,
                horizon=make_schedule(cfg.min_unroll_length, hi),
                loss_type="last_recompute",
                sign_delta_loss_scalar=1.0,
                **common,
            )
        estimators.append(est)
        names.append(tuple(f.name for f in group))
        d = resident_data(group)
        if d is not None and mesh is not None:
            d = jax.device_put(d, NamedSharding(mesh, P()))
        data.append(d)
    learner = MetaLearner(
        estimators=tuple(estimators),
        family_names=tuple(names),
        unravel=unravel,
        outer_lr=cfg.outer_lr,
        weight_decay=cfg.outer_weight_decay,
        mask=mask,
        freeze_exact=cfg.freeze_exact,
        mesh=mesh,
    )
    return Setup(lopt, families, learner, tuple(data), flat, mesh, inner_steps)


def init_state(setup: Setup, seed: int) -> LearnerState:
    """The learner state at iteration 0, placed on the mesh."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    with jax.threefry_partitionable(False):
        init = jax.jit(setup.learner.init).lower(setup.theta0, key)
        state = init.compile(compiler_options=INIT_COMPILE)(setup.theta0, key)
    return jax.device_put(state, setup.learner.shardings(state))


def compile_step(setup: Setup, state: LearnerState):
    """The outer iteration, compiled ahead of time with the state donated."""
    with jax.threefry_partitionable(False):
        lowered = jax.jit(setup.learner.step, donate_argnums=0).lower(state, setup.data)
    return lowered.compile(compiler_options=STEP_COMPILE)


def _fetch(metrics: dict, names: list[str]) -> dict[str, float]:
    host = jax.device_get(metrics)
    out = {}
    for k, v in host.items():
        if k == "family_loss":
            for name, x in zip(names, np.asarray(v)):
                out[f"family/{name}/meta_loss"] = float(x)
        else:
            out[k] = float(v)
    return out


class Trainer:
    """Runs one meta-training configuration to the end (or resumes it).

    Args:
      cfg: the configuration (validated on construction).
      tracker: where metrics go; a no-op by default.
      progress: show a tqdm bar (None: only when stderr is a terminal).
    """

    def __init__(
        self, cfg: TrainConfig, tracker: Tracker | None = None, progress: bool | None = None
    ):
        validate(cfg)
        self.cfg = cfg
        self.tracker = tracker or NoopTracker()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.exp_dir = cfg.exp_dir()
        self.config_json = cfg.to_json() | {"exp_id": cfg.resolved_exp_id()}
        self.timings: dict[str, float] = {}

    def _save(self, state, history, iteration: int | None) -> None:
        theta = self.setup.learner.theta_tree(state)
        name = self.setup.lopt.name
        checkpointing.save_theta(
            checkpointing.theta_path(self.exp_dir, iteration), theta, name, self.config_json
        )
        checkpointing.save_trainer_state(self.exp_dir, state, history, self.config_json)
        checkpointing.save_metrics(self.exp_dir, history)

    def run(self) -> dict:
        """Train; returns the final metrics row and the path of ``theta.state``."""
        cfg = self.cfg
        t0, cpu0 = time.perf_counter(), time.process_time()
        storage.makedirs(self.exp_dir)
        checkpointing.save_config(self.exp_dir, self.config_json)
        self.setup = setup = build(cfg)
        self.timings["build_s"] = time.perf_counter() - t0

        t = time.perf_counter()
        state = init_state(setup, cfg.seed)
        self.timings["init_s"] = time.perf_counter() - t
        t = time.perf_counter()
        step = compile_step(setup, state)
        self.timings["compile_s"] = time.perf_counter() - t
        # Restore only after compiling: the fresh and the resumed run then lower
        # the identical program (and share a persistent compilation cache entry).
        history = checkpointing.History()
        if cfg.resume:
            state, history, _ = checkpointing.load_trainer_state(self.exp_dir, state)
            state = jax.device_put(state, setup.learner.shardings(state))
        start = int(state.iteration)
        self.tracker.log_params({k: str(v) for k, v in self.config_json.items()})
        log.info("meta-training %s in %s from iteration %d", cfg.optimizer, self.exp_dir, start)

        names = setup.learner.flat_family_names
        pending: list[tuple[int, dict]] = []
        last_row: dict[str, float] = {}
        bar = _progress(self.progress, start, cfg.outer_iterations)
        tick, tick_iter = time.perf_counter(), start
        for i in range(start, cfg.outer_iterations):
            state, metrics = step(state, setup.data)
            pending.append((i, metrics))
            bar.update(1)
            log_now = (i + 1) % cfg.metrics_every == 0 or i == cfg.outer_iterations - 1
            save_now = i % cfg.ckpt_interval == 0
            if log_now or save_now:
                for _, m in pending:
                    history.pending.append(float(m["meta_loss"]))
                last = _fetch(pending[-1][1], names)
                pending = []
            if log_now:
                now = time.perf_counter()
                iters = i + 1 - tick_iter
                row = dict(last)
                row["average_meta_loss"] = float(np.mean(history.pending))
                row["throughput/outer_iters_per_s"] = iters / (now - tick)
                row["throughput/inner_steps_per_s"] = (
                    iters * setup.inner_steps_per_iteration / (now - tick)
                )
                history.pending = []
                history.append(i, row)
                self.tracker.log_metrics(row, step=i)
                bar.set_postfix(meta_loss=f"{row['average_meta_loss']:.4f}")
                log.info(
                    "iteration %d: average meta-loss %.4f, grad norm %.3g, %.2f s/iteration",
                    i,
                    row["average_meta_loss"],
                    row["grad_norm"],
                    (now - tick) / iters,
                )
                last_row, tick, tick_iter = row, now, i + 1
            if save_now:
                self._save(state, history, i)
        bar.close()
        self._save(state, history, None)
        final = checkpointing.theta_path(self.exp_dir)
        self.tracker.log_artifact(final, "checkpoint")
        self.state = state
        self.timings["wall_s"] = time.perf_counter() - t0
        self.timings["cpu_s"] = time.process_time() - cpu0
        return {"theta_path": final, "metrics": last_row, "timings": dict(self.timings)}


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="it", dynamic_ncols=True)
