"""AlgoPerf-lite runner and scoring: the submission API, timed as AlgoPerf times it.

The loop follows ``submission_runner.py``: the clock covers
``init_optimizer_state``, every ``data_selection`` + ``update_params`` (JIT
compilation included) and every ``prepare_for_eval``; evaluation is untimed.
Time to target is the clock at the first evaluation that meets the validation
target (AlgoPerf's scoring); a run stops when the validation and test targets
have both been met, when the clock passes the workload's budget (×1.5 under
the self-tuning ruleset, as in v0.6) or after ``max_steps``.

One deviation: AlgoPerf offers an evaluation every ``eval_period_time_sec``
seconds of training time; here evaluations happen every
``workload.eval_period_steps`` steps, so that step counts to target do not
depend on how busy the machine is. Both steps and seconds to target are
reported.

Scoring (AlgoPerf's performance profiles): per workload, each submission's
time to target divided by the best in the pool; ratios above ``r_max`` (4)
count as never; ``ρ_s(τ)`` is the fraction of workloads with ratio ≤ τ, and
the score is ``∫_1^{r_max} ρ_s(τ) dτ / (r_max − 1)`` ∈ [0, 1]. Scores are
relative to the pool.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import jax
import numpy as np

R_MAX = 4.0


@dataclasses.dataclass
class RunResult:
    """One submission on one workload."""

    workload: str
    submission: str
    reached: bool
    steps_to_target: int | None
    seconds_to_target: float | None
    steps: int
    seconds: float
    best_validation: float
    evals: list[dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _block(tree):
    return jax.block_until_ready(tree)


def run_submission(
    workload: Any,
    submission: ModuleType,
    label: str,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    self_tuning: bool = True,
    hyperparameters: Any = None,
    data_dir: str | None = None,
    time_budget: bool = True,
) -> RunResult:
    """Train ``workload`` with ``submission``'s five functions until target or budget.

    Args:
      workload: an AlgoPerf(-lite) workload.
      submission: a module with the five v0.6 submission functions.
      label: the submission's name in results.
      seed: seeds the model init, the data order and the update rng.
      max_steps: step limit (default: the workload's ``step_hint``).
      self_tuning: budget ×1.5 and ``hyperparameters=None``, as the self-tuning ruleset.
      hyperparameters: passed through under external tuning.
      data_dir: passed to the workload's input queue.
      time_budget: stop at the workload's time budget, as AlgoPerf does. Off,
        runs go to ``max_steps`` however long they take: on a shared machine,
        or with a slow first compilation, step counts then stay comparable.
    """
    max_steps = workload.step_hint if max_steps is None else max_steps
    budget = workload.max_allowed_runtime_sec * (1.5 if self_tuning else 1.0)
    if not time_budget:
        budget = math.inf
    hparams = None if self_tuning else hyperparameters
    rng = jax.random.PRNGKey(seed)
    data_rng, init_rng, opt_rng, rng = jax.random.split(rng, 4)
    params, model_state = workload.init_model_fn(init_rng)
    batch_size = submission.get_batch_size(workload.name)
    queue = workload._build_input_queue(data_rng, "train", data_dir, batch_size)

    t0 = time.perf_counter()
    opt_state = submission.init_optimizer_state(workload, params, model_state, hparams, opt_rng)
    _block(opt_state.opt_state if hasattr(opt_state, "opt_state") else opt_state)
    clock = time.perf_counter() - t0

    evals: list[dict[str, float]] = []
    eval_results: list[tuple[int, float]] = []
    # AlgoPerf scores the first evaluation that meets the validation target; the run
    # itself continues until the test target is met too.
    reached_at: tuple[int, float] | None = None
    step = 0
    higher = workload.target_metric_higher_is_better
    best = -math.inf if higher else math.inf
    while True:
        if step % workload.eval_period_steps == 0 or step >= max_steps or clock >= budget:
            t0 = time.perf_counter()
            opt_state, eval_params, eval_state = submission.prepare_for_eval(
                workload,
                params,
                workload.model_params_types,
                model_state,
                hparams,
                workload.loss_type,
                opt_state,
                eval_results,
                step,
                rng,
            )
            _block(eval_params)
            clock += time.perf_counter() - t0
            metrics = workload.eval_model(
                workload.eval_batch_size, eval_params, eval_state, rng, data_dir
            )
            metrics.update(global_step=step, accumulated_submission_time=clock)
            evals.append(metrics)
            value = metrics[f"validation/{workload.target_metric_name}"]
            best = max(best, value) if higher else min(best, value)
            eval_results.append((step, value))
            if reached_at is None and workload.has_reached_validation_target(metrics):
                reached_at = (step, clock)
            if reached_at is not None and workload.has_reached_test_target(metrics):
                break
            if step >= max_steps or clock >= budget:
                break
        rng, step_rng = jax.random.split(rng)
        t0 = time.perf_counter()
        batch = submission.data_selection(
            workload, queue, opt_state, params, model_state, hparams, step, step_rng
        )
        opt_state, params, model_state = submission.update_params(
            workload,
            params,
            workload.model_params_types,
            model_state,
            hparams,
            batch,
            workload.loss_type,
            opt_state,
            eval_results,
            step,
            step_rng,
        )
        _block(params)
        clock += time.perf_counter() - t0
        step += 1
    return RunResult(
        workload.name,
        label,
        reached_at is not None,
        None if reached_at is None else reached_at[0],
        None if reached_at is None else reached_at[1],
        step,
        clock,
        float(best),
        evals,
    )


def performance_profiles(
    times: Mapping[str, Mapping[str, float | None]], r_max: float = R_MAX, num_points: int = 1001
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """AlgoPerf's performance profiles and integrated scores.

    Args:
      times: submission → workload → time to target (None or inf: never).
      r_max: ratios above this count as never.
      num_points: τ grid size on [1, r_max].

    Returns:
      ``(taus, profiles, scores)``: the τ grid, submission → ρ(τ), and
      submission → ``∫_1^{r_max} ρ(τ) dτ / (r_max − 1)``.
    """
    subs = list(times)
    workloads = sorted({w for t in times.values() for w in t})
    table = np.array([[_as_time(times[s].get(w)) for w in workloads] for s in subs], np.float64)
    best = np.min(table, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isfinite(best), table / best, np.inf)
    ratios[ratios > r_max] = np.inf
    taus = np.linspace(1.0, r_max, num_points)
    profiles, scores = {}, {}
    for i, s in enumerate(subs):
        rho = np.array([np.mean(ratios[i] <= tau) for tau in taus])
        profiles[s] = rho
        scores[s] = float(np.trapezoid(rho, taus) / (r_max - 1.0))
    return taus, profiles, scores


def _as_time(t: float | None) -> float:
    return math.inf if t is None else float(t)
