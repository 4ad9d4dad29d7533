"""Helpers for replaying the golden update traces of the original implementation.

Each trace feeds stored gradients and losses to ``update`` on a toy parameter
tree ``mlp/~/linear_0`` {w (8,16), b (16,)}, ``mlp/~/linear_1`` {w (16,4), b (4,)}
and records the params after every update (see fixtures/golden/README.md).
"""

from __future__ import annotations

import numpy as np

from tests.conftest import GOLDEN

LEAVES = ("linear_0_w", "linear_0_b", "linear_1_w", "linear_1_b")


def load(name: str):
    return np.load(GOLDEN / f"{name}.npz")


def toy_tree(trace, prefix: str, t: int | None = None) -> dict:
    def get(leaf):
        arr = trace[prefix + leaf]
        return arr if t is None else arr[t]

    return {
        "mlp/~/linear_0": {"w": get("linear_0_w"), "b": get("linear_0_b")},
        "mlp/~/linear_1": {"w": get("linear_1_w"), "b": get("linear_1_b")},
    }


def leaf(tree: dict, name: str) -> np.ndarray:
    module, param = name[:8], name[-1]
    return np.asarray(tree[f"mlp/~/{module}"][param])


def replay(opt, trace, n_updates: int | None = None, num_steps: int = 100, key=None):
    """Run ``opt`` over the stored grads/losses; yield ``(t, state)`` after each update."""
    n = int(trace["n_updates"]) if n_updates is None else n_updates
    state = opt.init(toy_tree(trace, "init_"), num_steps=num_steps)
    for t in range(n):
        state = opt.update(state, toy_tree(trace, "grads_", t), loss=trace["losses"][t], key=key)
        yield t, state


def max_rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """Max abs difference relative to the tensor's largest magnitude."""
    scale = max(float(np.max(np.abs(expected))), 1e-30) if expected.size else 1.0
    return float(np.max(np.abs(np.asarray(actual) - expected))) / scale if expected.size else 0.0


def assert_params_match(opt, trace, rtol: float = 1e-5, **kwargs) -> float:
    """Replay and check every leaf after every update; returns the worst error."""
    worst = 0.0
    for t, state in replay(opt, trace, **kwargs):
        params = opt.get_params(state)
        for name in LEAVES:
            err = max_rel_err(leaf(params, name), trace["params_" + name][t + 1])
            worst = max(worst, err)
            assert err <= rtol, f"{name} after update {t}: relative error {err:.3g} > {rtol}"
    return worst
