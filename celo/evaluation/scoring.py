"""Scores against learning-rate-tuned Adam, and their aggregation (spec §11.5).

Per task, with the training-loss curves averaged over seeds and smoothed by an
exponential moving average (decay 0.9):

* **final-loss score** ``F = L_ref(H) / L_opt(H)``: above 1 beats the reference;
* **speedup score** ``S = t_ref / t_opt``, where ``t_opt`` is the number of
  steps after which the optimizer's smoothed curve first reaches the
  reference's final smoothed loss (0 if it never does) and ``t_ref`` the same
  count for the reference itself. For a reference curve that is lowest at its
  end, ``t_ref`` is the horizon ``H`` and ``S = H / t_opt``, the formula of
  spec §11.5; using ``t_ref`` keeps the reference's own score exactly 1 when
  its smoothed curve dips below its final value earlier (the horizon form
  is reported too, as ``speedup_score_horizon``).

A run that diverged has a non-finite final loss: its final-loss score is 0,
and its speedup counts only the steps before it diverged.

Aggregation across tasks uses rliable (IQM with bootstrap 95% confidence
intervals, median, optimality gap). With one score per task (curves are
averaged over seeds before scoring, as in the paper) a bootstrap over runs
alone would have nothing to resample, so the tasks are resampled too
(``task_bootstrap=True``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

EMA_DECAY = 0.9


def ema(x: Sequence[float], decay: float = EMA_DECAY) -> np.ndarray:
    """``s_0 = x_0``, ``s_t = decay·s_{t−1} + (1 − decay)·x_t``; NaN stays NaN once reached."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    s = x[0] if len(x) else np.nan
    for i, v in enumerate(x):
        s = decay * s + (1.0 - decay) * v if i else v
        out[i] = s
    return out


def smoothed_mean(curves: Sequence[Sequence[float]], decay: float = EMA_DECAY) -> np.ndarray:
    """The seed-average of equally long curves, then smoothed (a NaN in any seed stays)."""
    return ema(np.mean(np.asarray(curves, np.float64), axis=0), decay)


def final_value(smoothed: np.ndarray) -> float:
    """The last smoothed value (inf if it is not finite: the run diverged)."""
    v = float(smoothed[-1])
    return v if np.isfinite(v) else np.inf


def steps_to_reach(smoothed: np.ndarray, target: float) -> int | None:
    """Steps taken when the smoothed curve first is ≤ ``target`` (1-based), or None."""
    hit = np.flatnonzero(np.asarray(smoothed) <= target)  # NaN compares False
    return int(hit[0]) + 1 if hit.size else None


def final_loss_score(smoothed: np.ndarray, ref_smoothed: np.ndarray) -> float:
    """``L_ref(H) / L_opt(H)``; 0 when the optimizer diverged, NaN when the reference did."""
    ref, opt = final_value(ref_smoothed), final_value(smoothed)
    if not np.isfinite(ref):
        return float("nan")
    if not np.isfinite(opt):
        return 0.0
    return ref / opt if opt > 0 else float("inf")


def speedup_score(smoothed: np.ndarray, ref_smoothed: np.ndarray, horizon: bool = False) -> float:
    """``t_ref / t_opt`` (or ``H / t_opt`` with ``horizon=True``); 0 if never reached."""
    target = final_value(ref_smoothed)
    if not np.isfinite(target):
        return float("nan")
    t_opt = steps_to_reach(smoothed, target)
    if t_opt is None:
        return 0.0
    t_ref = len(ref_smoothed) if horizon else steps_to_reach(ref_smoothed, target)
    return float(t_ref) / t_opt


def best_tag(finals: Mapping[str, float]) -> str | None:
    """The sweep entry with the lowest final smoothed loss (diverged entries never win)."""
    ok = {k: v for k, v in finals.items() if np.isfinite(v)}
    return min(ok, key=ok.get) if ok else None


@contextlib.contextmanager
def _bootstrap_rng(seed: int):
    """Seed rliable's bootstrap and leave the caller's global RNG untouched.

    rliable 1.2's ``StratifiedBootstrap`` draws its indices from the global
    ``np.random`` even when given a ``random_state``, so reproducible CIs need
    the global generator seeded; its previous state is restored afterwards.
    """
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch deprecates the RandomState that rliable hands it; the draws are unchanged.
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(saved)


def aggregate(
    scores: Mapping[str, Sequence[float]], reps: int = 5000, seed: int = 0
) -> dict[str, dict[str, float | list[float]]]:
    """IQM, median and optimality gap (γ = 1) across tasks, with bootstrap 95% CIs.

    Args:
      scores: optimizer → one score per task (the same tasks, in the same order, for all).
      reps: bootstrap repetitions.
      seed: seeds the bootstrap.

    Returns:
      optimizer → ``{"iqm", "iqm_ci", "median", "median_ci", "optimality_gap",
      "optimality_gap_ci"}``, CIs as ``[low, high]``.
    """
    from rliable import library as rly
    from rliable import metrics

    matrices = {k: np.asarray(v, np.float64).reshape(1, -1) for k, v in scores.items()}
    fn = lambda m: np.array(
        [
            metrics.aggregate_iqm(m),
            metrics.aggregate_median(m),
            metrics.aggregate_optimality_gap(m, 1.0),
        ]
    )
    with _bootstrap_rng(seed):
        point, ci = rly.get_interval_estimates(
            matrices, fn, task_bootstrap=True, reps=reps, random_state=np.random.RandomState(seed)
        )
    out = {}
    for k in matrices:
        p, c = point[k], ci[k]
        out[k] = {
            "iqm": float(p[0]),
            "iqm_ci": [float(c[0, 0]), float(c[1, 0])],
            "median": float(p[1]),
            "median_ci": [float(c[0, 1]), float(c[1, 1])],
            "optimality_gap": float(p[2]),
            "optimality_gap_ci": [float(c[0, 2]), float(c[1, 2])],
        }
    return out


def performance_profile(
    scores: Mapping[str, Sequence[float]], taus: Sequence[float], reps: int = 2000, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of tasks whose score exceeds each τ, with bootstrap 95% bands (rliable).

    Returns:
      ``(profiles, cis)``: optimizer → array over ``taus``, and → ``(2, len(taus))``.
    """
    from rliable import library as rly

    matrices = {k: np.asarray(v, np.float64).reshape(1, -1) for k, v in scores.items()}
    taus = np.asarray(taus, np.float64)
    # rly.create_performance_profile without its global-RNG bootstrap: same function, seeded.
    with _bootstrap_rng(seed):
        dist, ci = rly.get_interval_estimates(
            matrices,
            lambda m: rly.score_distributions(m, taus),
            task_bootstrap=True,
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return {k: np.asarray(v) for k, v in dist.items()}, {k: np.asarray(v) for k, v in ci.items()}
