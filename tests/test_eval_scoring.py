"""Scores on synthetic curves with known answers, and the aggregates against rliable."""

from __future__ import annotations

import numpy as np
import pytest

from celo.evaluation import scoring

H = 1000


def _decay(t, rate=3.0):
    # A smooth, strictly decreasing loss curve: 2·exp(-rate·t/H) + 0.1.
    return 2.0 * np.exp(-rate * np.asarray(t, np.float64) / H) + 0.1


def test_ema_matches_its_recursion_and_keeps_nan():
    x = np.array([4.0, 2.0, 1.0, np.nan, 1.0])
    s = scoring.ema(x)
    assert s[0] == 4.0
    assert s[1] == pytest.approx(0.9 * 4.0 + 0.1 * 2.0)
    assert s[2] == pytest.approx(0.9 * s[1] + 0.1 * 1.0)
    assert np.isnan(s[3]) and np.isnan(s[4])


def test_equal_curves_score_one():
    curve = scoring.ema(_decay(np.arange(H)))
    assert scoring.final_loss_score(curve, curve) == 1.0
    assert scoring.speedup_score(curve, curve) == 1.0
    assert scoring.speedup_score(curve, curve, horizon=True) == 1.0


def test_equal_noisy_curves_score_one_even_when_not_monotone():
    rng = np.random.default_rng(0)
    curve = scoring.ema(_decay(np.arange(H)) * np.exp(0.3 * rng.standard_normal(H)))
    # The smoothed curve dips below its final value before the end, so H/t would exceed 1.
    assert scoring.steps_to_reach(curve, curve[-1]) < H
    assert scoring.speedup_score(curve, curve) == 1.0
    assert scoring.speedup_score(curve, curve, horizon=True) > 1.0


def test_twice_as_fast_gives_speedup_two():
    # A step-indexed sequence, no smoothing: the fast curve is the reference at 2t.
    steps = np.arange(1, H + 1)
    ref = _decay(steps)
    fast = _decay(2 * steps)
    assert scoring.steps_to_reach(fast, ref[-1]) == H // 2
    assert scoring.speedup_score(fast, ref) == 2.0
    assert scoring.speedup_score(fast, ref, horizon=True) == 2.0
    assert scoring.final_loss_score(fast, ref) == pytest.approx(ref[-1] / fast[-1])
    assert scoring.final_loss_score(fast, ref) > 1.0


def test_never_reaching_scores_zero_speedup_and_ratio_final_loss():
    ref = _decay(np.arange(H))
    slow = ref + 0.5
    assert scoring.speedup_score(slow, ref) == 0.0
    assert scoring.final_loss_score(slow, ref) == pytest.approx(ref[-1] / (ref[-1] + 0.5))


def test_diverged_run_scores_zero_final_loss_but_keeps_early_progress():
    ref = _decay(np.arange(H))
    fast_then_nan = _decay(4 * np.arange(H))
    fast_then_nan[H // 2 :] = np.nan
    assert scoring.final_loss_score(fast_then_nan, ref) == 0.0
    assert scoring.speedup_score(fast_then_nan, ref) > 1.0
    assert scoring.speedup_score(np.full(H, np.nan), ref) == 0.0


def test_smoothed_mean_averages_seeds_before_smoothing():
    a, b = np.array([2.0, 1.0, 0.0]), np.array([4.0, 3.0, 2.0])
    np.testing.assert_allclose(scoring.smoothed_mean([a, b]), scoring.ema([3.0, 2.0, 1.0]))


def test_best_tag_ignores_diverged_entries():
    assert scoring.best_tag({"lr_1e-03": 0.5, "lr_1e-02": 0.3, "lr_1e-01": np.inf}) == "lr_1e-02"
    assert scoring.best_tag({"lr_1e+00": np.inf}) is None


def test_iqm_equals_rliable_on_a_hand_checked_case():
    from rliable import metrics

    scores = np.array([0.5, 1.0, 1.5, 2.0, 10.0, 0.0, 3.0, 4.0])
    # Sorted: 0, .5, 1, 1.5 | 2, 3 ... the middle half is 1, 1.5, 2, 3 → mean 1.875.
    out = scoring.aggregate({"opt": scores}, reps=200)["opt"]
    assert out["iqm"] == pytest.approx(1.875)
    assert out["iqm"] == pytest.approx(metrics.aggregate_iqm(scores.reshape(1, -1)))
    assert out["median"] == pytest.approx(1.75)
    # Optimality gap at γ=1: mean of (1 - min(s, 1)) = (0.5 + 0 + 0 + 0 + 0 + 1 + 0 + 0) / 8.
    assert out["optimality_gap"] == pytest.approx(1.5 / 8)
    lo, hi = out["iqm_ci"]
    assert lo <= out["iqm"] <= hi and lo < hi


def test_aggregate_ci_is_reproducible_and_matches_rliable_directly():
    from rliable import library as rly
    from rliable import metrics

    rng = np.random.default_rng(1)
    scores = {"a": rng.uniform(0.5, 2.0, 17), "b": rng.uniform(0.0, 1.0, 17)}
    ours = scoring.aggregate(scores, reps=300, seed=3)
    again = scoring.aggregate(scores, reps=300, seed=3)
    assert ours == again
    before = np.random.get_state()[1].copy()
    scoring.aggregate(scores, reps=10, seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # caller's RNG untouched
    state = np.random.get_state()
    np.random.seed(3)  # rliable draws its resamples from the global generator
    _, ci = rly.get_interval_estimates(
        {k: v.reshape(1, -1) for k, v in scores.items()},
        metrics.aggregate_iqm,
        task_bootstrap=True,
        reps=300,
        random_state=np.random.RandomState(3),
    )
    np.random.set_state(state)
    # Same bootstrap draws (one call evaluates all three statistics on each resample).
    for k in scores:
        np.testing.assert_allclose(ours[k]["iqm_ci"], ci[k].ravel(), rtol=1e-12)


def test_performance_profile_counts_tasks_above_tau():
    prof, ci = scoring.performance_profile(
        {"a": [0.5, 1.5, 2.5, 3.5]}, [0.0, 1.0, 2.0, 3.0, 4.0], reps=50
    )
    np.testing.assert_allclose(prof["a"], [1.0, 0.75, 0.5, 0.25, 0.0])
    assert ci["a"].shape == (2, 5)


def test_plot_palette_keeps_every_optimizer_distinct():
    """Twenty optimizers in one figure need twenty colours (the 10-colour cycle repeats)."""
    from matplotlib.colors import to_hex

    from celo.evaluation import plots

    for n in (3, 10, 20, 23):
        colours = [to_hex(c) for c in plots.palette(n)]
        assert len(colours) == n and len(set(colours)) == n
    assert plots.palette(3) == list(plots.COLORS[:3])  # small runs keep the usual colours
