"""Train one optimizer on one task and record its curves (spec §11.1).

The run follows the reference's ``single_task_training_curves``: the training
loss is passed to the optimizer at every step, and every ``eval_every`` steps
the loss is evaluated on ``eval_batches`` batches of each split in
``train``, ``outer_valid`` and ``test`` (``last_eval_batches`` at the end).

One deliberate difference: a run of ``steps`` makes exactly ``steps`` updates
and records ``steps`` training losses. The reference's loop is inclusive and
makes ``steps + 1`` (spec §15.1 item 14). Evaluations happen before the
updates at steps ``0, eval_every, 2·eval_every, …`` and once more after the
last update, at step ``steps``.

Training runs in ``lax.scan`` chunks of ``eval_every`` steps, with that
chunk's batches fed from the host, so each chunk is one compiled call. The
optimizer's hyperparameters (a learning rate or a learned optimizer's theta)
are arguments of the compiled functions: a learning-rate sweep or a new
theta reuses one compilation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from celo.optimizers.base import OptaxOptimizer, OptaxState, Optimizer, match_type, strong_types
from celo.tasks.base import Task

#: Splits evaluated during a run, as in the reference.
EVAL_SPLITS: tuple[str, ...] = ("train", "outer_valid", "test")

BuildOpt = Callable[[Any], Optimizer]


@dataclasses.dataclass(frozen=True)
class CurveConfig:
    """How one training curve is recorded.

    Attributes:
      steps: number of optimizer updates.
      eval_every: steps between evaluations (also the length of a compiled chunk).
      eval_batches: batches per split at each evaluation.
      last_eval_batches: batches per split at the final evaluation.
      seed: seeds the parameter init, the loss keys and the data order.
      scan: run each chunk as one ``lax.scan`` (True) or as one compiled call
        per step (False); None picks scan unless the task has a convolution.
        XLA:CPU runs a convolution inside a scanned loop about 100× slower
        than at the top level of a computation (measured on
        ``Conv_Cifar10_32x64x64``: 0.7 s against 77 s per step), so those tasks
        step one compiled call at a time.
    """

    steps: int
    eval_every: int = 10
    eval_batches: int = 5
    last_eval_batches: int = 10
    seed: int = 0
    scan: bool | None = None


@dataclasses.dataclass
class Curve:
    """What one run records; :meth:`arrays` gives the reference's ``.npz`` keys."""

    train_loss: np.ndarray
    eval_xs: np.ndarray
    eval_loss: dict[str, np.ndarray]
    eval_loss_normalized: dict[str, np.ndarray]
    diverged: bool
    diverged_at: int | None
    compile_seconds: float
    train_seconds: float
    eval_seconds: float
    steps_run: int

    @property
    def seconds_per_step(self) -> float:
        """Wall time of one compiled update (data feeding included, compile and evals excluded)."""
        return self.train_seconds / max(self.steps_run, 1)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "train/xs": np.arange(len(self.train_loss), dtype=np.int64),
            "train/loss": self.train_loss,
            "eval/xs": self.eval_xs,
        }
        for split in EVAL_SPLITS:
            out[f"eval/{split}/loss"] = self.eval_loss[split]
            out[f"eval/{split}/loss_normalized"] = self.eval_loss_normalized[split]
        return out

    def summary(self) -> dict[str, Any]:
        finite = np.isfinite(self.train_loss)
        return {
            "steps": len(self.train_loss),
            "steps_run": self.steps_run,
            "diverged": self.diverged,
            "diverged_at": self.diverged_at,
            "final_train_loss": _float(self.train_loss[-1]),
            "min_train_loss": _float(np.min(self.train_loss[finite])) if finite.any() else None,
            "final_eval": {s: _float(v[-1]) for s, v in self.eval_loss.items()},
            "compile_seconds": self.compile_seconds,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "seconds_per_step": self.seconds_per_step,
        }


def _float(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _pure_parts(opt: Optimizer):
    """``(init, update)`` of ``opt`` that can be traced inside another jit.

    The optax face jits its update with the optimizer as a static argument
    hashed by identity; an optimizer built inside a trace (a learning rate that
    is a traced argument) must not go through that cache, so its transformation
    is applied directly here, with the same state layout.
    """
    if isinstance(opt, OptaxOptimizer):
        tx = opt.tx

        def init(params, model_state, num_steps):
            del num_steps
            params = strong_types(params)
            return OptaxState(params, model_state, tx.init(params), jnp.asarray(0, jnp.int32))

        def update(state, grad, loss, model_state, key):
            del key
            updates, inner = tx.update(
                grad, state.optax_opt_state, state.params, value=loss, loss=loss
            )
            params = jax.tree_util.tree_map(lambda p, u: p + u, state.params, updates)
            new = OptaxState(params, model_state, inner, state.iteration + 1)
            return match_type(new, state)

        return init, update

    def init(params, model_state, num_steps):
        return opt.init(params, model_state=model_state, num_steps=num_steps)

    def update(state, grad, loss, model_state, key):
        return opt.update(state, grad, loss=loss, model_state=model_state, key=key)

    return init, update


class CurveRunner:
    """Compiled training and evaluation of one (task, optimizer family, horizon).

    Args:
      task: the task whose model and loss are trained (its data are not used:
        each run passes its own data iterators, so every run sees the same
        batches for a given seed).
      build_opt: maps hyperparameters (a learning rate, or theta) to an
        :class:`~celo.optimizers.base.Optimizer`; called inside the trace.
      config: steps and evaluation schedule.
    """

    def __init__(self, task: Task, build_opt: BuildOpt, config: CurveConfig):
        self.task = task
        self.build_opt = build_opt
        self.config = config
        steps = config.steps

        def init(hp, key):
            params, model_state = task.init_with_state(key)
            opt_init, _ = _pure_parts(build_opt(hp))
            return opt_init(params, model_state, steps)

        def body(opt, carry, batch):
            opt_state, key = carry
            _, opt_update = _pure_parts(opt)
            key, key_loss, key_opt = jax.random.split(key, 3)
            params, model_state = opt.get_params_state(opt_state)
            (loss, model_state), grad = jax.value_and_grad(task.loss_with_state, has_aux=True)(
                params, model_state, key_loss, batch
            )
            opt_state = opt_update(opt_state, grad, loss, model_state, key_opt)
            return (opt_state, key), loss

        def chunk(hp, opt_state, key, batches):
            opt = build_opt(hp)
            step = lambda carry, batch: body(opt, carry, batch)
            (opt_state, key), losses = jax.lax.scan(step, (opt_state, key), batches)
            return opt_state, key, losses

        def single(hp, opt_state, key, batch):
            (opt_state, key), loss = body(build_opt(hp), (opt_state, key), batch)
            return opt_state, key, loss

        def evaluate(hp, opt_state, key, batch):
            params, model_state = build_opt(hp).get_params_state(opt_state)
            loss, _ = task.loss_with_state(params, model_state, key, batch)
            return loss, task.normalizer(loss)

        self._jitted = {
            "init": jax.jit(init),
            "chunk": jax.jit(chunk),
            "step": jax.jit(single),
            "eval": jax.jit(evaluate),
        }
        self._compiled: dict[tuple, Any] = {}
        self._compile_seconds = 0.0
        self.scan = config.scan if config.scan is not None else not uses_convolution(task)

    def _train_chunk(self, hp, opt_state, key, batches):
        """``length`` updates: one scanned call, or one compiled call per step (see ``scan``)."""
        if self.scan:
            fn = self._compiled_fn("chunk", hp, opt_state, key, batches)
            t0 = time.perf_counter()
            opt_state, key, losses = fn(hp, opt_state, key, batches)
            losses = np.asarray(losses)
            return opt_state, key, losses, time.perf_counter() - t0
        n = jax.tree_util.tree_leaves(batches)[0].shape[0]
        losses, seconds = [], 0.0
        for i in range(n):
            batch = jax.tree_util.tree_map(lambda x, i=i: x[i], batches)
            fn = self._compiled_fn("step", hp, opt_state, key, batch)
            t0 = time.perf_counter()
            opt_state, key, loss = fn(hp, opt_state, key, batch)
            losses.append(np.asarray(loss))
            seconds += time.perf_counter() - t0
        return opt_state, key, np.stack(losses), seconds

    def _compiled_fn(self, name: str, *args):
        """Ahead-of-time compiled ``name`` for these shapes, so compile time is measured apart."""
        shapes = jax.tree_util.tree_map(
            lambda x: (np.shape(x), str(getattr(x, "dtype", type(x)))), args
        )
        key = (name, str(shapes))
        if key not in self._compiled:
            t0 = time.perf_counter()
            self._compiled[key] = self._jitted[name].lower(*args).compile()
            self._compile_seconds += time.perf_counter() - t0
        return self._compiled[key]

    def run(
        self,
        hp: Any,
        datasets: Any,
        eval_datasets: Any = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Curve:
        """Train with hyperparameters ``hp`` on ``datasets`` and return the curves.

        Args:
          hp: the hyperparameters handed to ``build_opt``.
          datasets: training batches come from ``datasets.train``.
          eval_datasets: evaluation batches (train, outer_valid, test); ``datasets``
            if None. Give a separate copy to keep evaluation from consuming the
            training stream (the reference shares one train iterator).
          on_progress: called as ``on_progress(steps_done, steps)`` after every
            chunk of ``eval_every`` updates.
        """
        cfg = self.config
        self._compile_seconds = self._eval_compile = 0.0
        if hp is not None:
            hp = strong_types(jax.tree_util.tree_map(jnp.asarray, hp))
        key_init, key_train, key_eval = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
        opt_state = self._compiled_fn("init", hp, key_init)(hp, key_init)
        train = datasets.split("train")
        evals = {s: (eval_datasets or datasets).split(s) for s in EVAL_SPLITS}

        losses = np.full(cfg.steps, np.nan, np.float32)
        eval_xs = list(range(0, cfg.steps, cfg.eval_every)) + [cfg.steps]
        raw = {s: np.full(len(eval_xs), np.nan, np.float32) for s in EVAL_SPLITS}
        norm = {s: np.full(len(eval_xs), np.nan, np.float32) for s in EVAL_SPLITS}
        train_s = eval_s = 0.0
        diverged_at, steps_run = None, 0
        key = key_train
        for i, step in enumerate(eval_xs):
            last = step == cfg.steps
            t0 = time.perf_counter()
            key_eval, sub = jax.random.split(key_eval)
            n = cfg.last_eval_batches if last else cfg.eval_batches
            for split in EVAL_SPLITS:
                raw[split][i], norm[split][i] = self._eval_mean(hp, opt_state, sub, evals[split], n)
            eval_s += time.perf_counter() - t0
            if last:
                break
            length = min(cfg.eval_every, cfg.steps - step)
            batches = _stack(train, length)
            opt_state, key, chunk_losses, seconds = self._train_chunk(hp, opt_state, key, batches)
            train_s += seconds
            losses[step : step + length] = chunk_losses
            steps_run = step + length
            if on_progress is not None:
                on_progress(steps_run, cfg.steps)
            bad = ~np.isfinite(chunk_losses)
            if bad.any():
                # Recorded, not dropped: the rest of the curve stays NaN.
                diverged_at = step + int(np.argmax(bad))
                break
        return Curve(
            train_loss=losses,
            eval_xs=np.asarray(eval_xs, np.int64),
            eval_loss=raw,
            eval_loss_normalized=norm,
            diverged=diverged_at is not None,
            diverged_at=diverged_at,
            compile_seconds=self._compile_seconds,
            train_seconds=train_s,
            eval_seconds=eval_s - self._eval_compile,
            steps_run=steps_run,
        )

    def _eval_mean(self, hp, opt_state, key, it: Iterator, n: int) -> tuple[float, float]:
        raws, norms = [], []
        for k in jax.random.split(key, n):
            batch = next(it)
            start = self._compile_seconds
            fn = self._compiled_fn("eval", hp, opt_state, k, batch)
            self._eval_compile += self._compile_seconds - start
            r, z = fn(hp, opt_state, k, batch)
            raws.append(r)
            norms.append(z)
        return float(np.mean(raws)), float(np.mean(norms))


def uses_convolution(task: Task) -> bool:
    """Whether ``task``'s loss contains a convolution (traced abstractly, no data loaded)."""
    params, state = jax.eval_shape(task.init_with_state, jax.random.PRNGKey(0))
    batch = task.abstract_batch
    if not batch:  # shapes unknown without loading data: keep the default (scan)
        return False
    jaxpr = jax.make_jaxpr(task.loss_with_state)(params, state, jax.random.PRNGKey(0), batch)
    return _has_primitive(jaxpr.jaxpr, "conv_general_dilated")


def _has_primitive(jaxpr, name: str) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            return True
        if any(_has_primitive(sub, name) for sub in _sub_jaxprs(eqn.params)):
            return True
    return False


def _sub_jaxprs(params: dict) -> list:
    """Jaxprs nested in an equation's parameters (pjit, scan, cond, custom_vjp …)."""
    out = []
    for v in params.values():
        for x in v if isinstance(v, (list, tuple)) else (v,):
            inner = getattr(x, "jaxpr", x)
            if hasattr(inner, "eqns"):
                out.append(inner)
    return out


def _stack(it: Iterator, n: int) -> Any:
    batches = [next(it) for _ in range(n)]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)


def train_curve(
    task: Task,
    opt: Optimizer | BuildOpt,
    config: CurveConfig,
    hp: Any = None,
    datasets: Any = None,
    eval_datasets: Any = None,
) -> Curve:
    """One run: ``opt`` (or ``build_opt(hp)``) trains ``task`` for ``config.steps`` updates.

    Args:
      task: the task to train.
      opt: an optimizer, or a function of ``hp`` that builds one.
      config: steps, evaluation schedule and seed.
      hp: hyperparameters handed to ``opt`` when it is a builder.
      datasets: data iterators; ``task.datasets`` if None.
      eval_datasets: iterators for the evaluations; ``datasets`` if None.
    """
    build = opt if callable(opt) and not isinstance(opt, Optimizer) else (lambda _: opt)
    runner = CurveRunner(task, build, config)
    return runner.run(hp, task.datasets if datasets is None else datasets, eval_datasets)
