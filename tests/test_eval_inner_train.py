"""Inner training curves: exactly ``steps`` updates, the loss at every step, divergence kept."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from celo.data.base import Datasets
from celo.evaluation.inner_train import EVAL_SPLITS, CurveConfig, CurveRunner, train_curve
from celo.factory import get_optimizer
from celo.optimizers.base import Optimizer
from celo.tasks.base import Task


def _batches(seed: int, n: int = 400, dim: int = 5, bs: int = 8):
    rng = np.random.default_rng(seed)
    w = np.arange(1.0, dim + 1.0, dtype=np.float32)
    for _ in range(n):
        x = rng.standard_normal((bs, dim)).astype(np.float32)
        yield {"x": x, "y": x @ w}


def _datasets(seed: int = 0) -> Datasets:
    abstract = {
        "x": jax.ShapeDtypeStruct((8, 5), jnp.float32),
        "y": jax.ShapeDtypeStruct((8,), jnp.float32),
    }
    return Datasets(*(_batches(seed * 10 + i) for i in range(4)), abstract_batch=abstract)


class Regression(Task):
    """Least squares on a fixed stream of batches; the key is unused, so runs are replayable."""

    def init(self, key):
        return {"w": jnp.zeros((5,)), "b": jnp.zeros(())}

    def loss(self, params, key, data):
        return jnp.mean((data["x"] @ params["w"] + params["b"] - data["y"]) ** 2)


def _manual(task, opt, steps, datasets, seed=0):
    """The reference loop, written plainly: returns training losses and the final params."""
    key = jax.random.split(jax.random.PRNGKey(seed), 3)[0]
    params, ms = task.init_with_state(key)
    state = opt.init(params, model_state=ms, num_steps=steps)
    losses = []
    for _ in range(steps):
        params = opt.get_params(state)
        loss, grad = jax.value_and_grad(task.loss)(params, None, next(datasets.train))
        state = opt.update(state, grad, loss=loss)
        losses.append(float(loss))
    return np.array(losses), opt.get_params(state)


@flax.struct.dataclass
class _LossState:
    params: dict
    state: object
    seen: jnp.ndarray


class LossScaledSGD(Optimizer):
    """p ← p − lr·loss·g: the trajectory changes unless the loss arrives at every step."""

    def init(self, params, model_state=None, num_steps=None, key=None):
        return _LossState(params, model_state, jnp.asarray(0, jnp.int32))

    def update(self, opt_state, grad, loss=None, model_state=None, is_valid=False, key=None):
        if loss is None:
            raise ValueError("needs the loss")
        params = jax.tree_util.tree_map(lambda p, g: p - 0.01 * loss * g, opt_state.params, grad)
        return _LossState(params, model_state, opt_state.seen + 1)


def test_exactly_steps_updates_and_reference_keys():
    curve = train_curve(
        Regression(),
        get_optimizer("sgd", learning_rate=0.05),
        CurveConfig(steps=25),
        datasets=_datasets(),
    )
    arrays = curve.arrays()
    assert arrays["train/loss"].shape == (25,)
    np.testing.assert_array_equal(arrays["train/xs"], np.arange(25))
    np.testing.assert_array_equal(arrays["eval/xs"], [0, 10, 20, 25])
    for split in EVAL_SPLITS:
        assert arrays[f"eval/{split}/loss"].shape == (4,)
        assert np.isfinite(arrays[f"eval/{split}/loss_normalized"]).all()
    assert curve.steps_run == 25 and not curve.diverged
    assert curve.seconds_per_step > 0


def test_progress_is_reported_after_every_chunk():
    seen = []
    runner = CurveRunner(
        Regression(), lambda lr: get_optimizer("sgd", learning_rate=lr), CurveConfig(steps=25)
    )
    runner.run(0.05, _datasets(), on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(10, 25), (20, 25), (25, 25)]
    seen.clear()
    diverging = runner.run(10.0 * 1e3, _datasets(), on_progress=lambda *a: seen.append(a))
    assert diverging.diverged and seen[-1][0] == diverging.steps_run < 25


def test_curve_matches_a_plain_loop_with_the_loss_passed_every_step():
    task, opt = Regression(), LossScaledSGD()
    curve = train_curve(
        task, opt, CurveConfig(steps=23), datasets=_datasets(), eval_datasets=_datasets(1)
    )
    want, params = _manual(task, opt, 23, _datasets())
    np.testing.assert_allclose(curve.train_loss, want, rtol=1e-5)
    # The final evaluation runs after the last (23rd) update: it equals the plain loop's
    # loss of the final params on the same ten test batches, after the 3 × 5 batches
    # that the evaluations at steps 0, 10 and 20 used.
    test_batches = _datasets(1).test
    for _ in range(15):
        next(test_batches)
    final = np.mean([float(task.loss(params, None, next(test_batches))) for _ in range(10)])
    np.testing.assert_allclose(curve.eval_loss["test"][-1], final, rtol=1e-5)


def test_learning_rates_share_one_compilation():
    runner = CurveRunner(
        Regression(), lambda lr: get_optimizer("adam", learning_rate=lr), CurveConfig(steps=20)
    )
    first = runner.run(1e-2, _datasets(), _datasets(1))
    second = runner.run(1e-1, _datasets(), _datasets(1))
    assert first.compile_seconds > 0
    assert second.compile_seconds == 0.0
    assert not np.allclose(first.train_loss, second.train_loss)
    want, _ = _manual(Regression(), get_optimizer("adam", learning_rate=1e-1), 20, _datasets())
    np.testing.assert_allclose(second.train_loss, want, rtol=1e-5)


def test_divergence_is_recorded_not_dropped():
    curve = train_curve(
        Regression(),
        get_optimizer("sgd", learning_rate=10.0),
        CurveConfig(steps=200),
        datasets=_datasets(),
    )
    assert curve.diverged
    assert 0 < curve.diverged_at < 200
    assert np.isfinite(curve.train_loss[: curve.diverged_at]).all()
    assert not np.isfinite(curve.train_loss[curve.diverged_at :]).any()
    summary = curve.summary()
    assert summary["diverged"] and summary["final_train_loss"] is None


@pytest.mark.parametrize("name", ["celo_adam"])
def test_learned_optimizer_theta_is_an_argument(name):
    from celo.evaluation import specs
    from tests.conftest import CHECKPOINTS

    build, hps = specs.build(specs.parse_optimizer(f"{name}={CHECKPOINTS / name / 'theta.state'}"))
    runner = CurveRunner(Regression(), build, CurveConfig(steps=20))
    curve = runner.run(hps["theta"], _datasets())
    assert np.isfinite(curve.train_loss).all()
    assert curve.train_loss[-1] < curve.train_loss[0]
    zero = jax.tree_util.tree_map(jnp.zeros_like, hps["theta"])
    again = runner.run(zero, _datasets())  # a new theta reuses the compiled step
    assert again.compile_seconds == 0.0


class ConvRegression(Regression):
    """The regression with a 1×1 convolution in front: steps one compiled call at a time."""

    def init(self, key):
        return {"w": jnp.zeros((5,)), "b": jnp.zeros(()), "k": jnp.ones((1, 1, 1, 1))}

    def loss(self, params, key, data):
        x = jax.lax.conv_general_dilated(
            data["x"][:, None, :, None],
            params["k"],
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )[:, 0, :, 0]
        return jnp.mean((x @ params["w"] + params["b"] - data["y"]) ** 2)


def test_tasks_with_convolutions_step_without_scan_and_give_the_same_curve():
    from celo.evaluation.inner_train import uses_convolution

    task = ConvRegression()
    task.datasets = _datasets()  # abstract batch for the trace
    assert uses_convolution(task) and not uses_convolution(_with_data(Regression()))
    opt = get_optimizer("sgd", learning_rate=0.05)
    stepped = CurveRunner(task, lambda _: opt, CurveConfig(steps=15))
    assert not stepped.scan
    scanned = CurveRunner(task, lambda _: opt, CurveConfig(steps=15, scan=True))
    a = stepped.run(None, _datasets(), _datasets(1))
    b = scanned.run(None, _datasets(), _datasets(1))
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5)
    np.testing.assert_allclose(a.eval_loss["test"], b.eval_loss["test"], rtol=1e-5)


def _with_data(task):
    task.datasets = _datasets()
    return task
