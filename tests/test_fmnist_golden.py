"""The seed README's example: released Celo vs Adam on Fashion-MNIST, against the
original implementation's recorded run (fixtures/golden/fmnist_mlp_curves.npz)."""

from __future__ import annotations

import numpy as np
import optax
import pytest

from celo import demo
from celo.factory import get_optimizer
from celo.optimizers.base import OptaxOptimizer
from celo.utils import init_lopt_from_ckpt
from tests import golden
from tests.conftest import CHECKPOINTS


@pytest.fixture(scope="module")
def ref():
    return golden.load("fmnist_mlp_curves")


@pytest.fixture(scope="module")
def setup(ref, request):
    data_dir = request.getfixturevalue("data_dir")
    data = demo.fashion_mnist(data_dir)
    init = {}
    for key in ref.files:
        if key.startswith("init/"):
            module, param = key[len("init/") :].rsplit("/", 1)
            init.setdefault(module, {})[param] = ref[key]
    return data, init


@pytest.fixture(scope="module")
def data_dir():
    import os
    from pathlib import Path

    root = os.environ.get("CELO_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("CELO_DATA_DIR is not set: point it at ../shared/datasets to run data tests")
    return Path(root)


@pytest.fixture(scope="module")
def curves(ref, setup):
    data, init = setup
    perm = np.asarray(ref["perm"])
    celo = init_lopt_from_ckpt(get_optimizer("celo"), str(CHECKPOINTS / "celo" / "theta.state"))
    adam = OptaxOptimizer(optax.adam(1e-3), name="optax_adam")  # eps_root 0, as recorded
    return {
        name: demo.train(opt, init, data, perm, 1000, num_steps=1000)
        for name, opt in (("celo", celo), ("adam", adam))
    }


def test_loader_gives_the_recorded_images_in_order(ref, setup):
    data, _ = setup
    sums = np.asarray(data["train"][0], np.float64).sum(axis=1)
    np.testing.assert_allclose(sums, ref["data_train_image_sums"], rtol=1e-6)


@pytest.mark.parametrize("name", ["celo", "adam"])
def test_early_steps_agree_closely(ref, curves, name):
    c = curves[name]
    np.testing.assert_allclose(c.train_loss[:10], ref[f"{name}/train_loss"][:10], rtol=1e-5)


@pytest.mark.parametrize("name", ["celo", "adam"])
def test_final_statistics_within_a_few_percent(ref, curves, name):
    """The curves are chaotic at the rounding level, so compare statistics (README)."""
    c = curves[name]
    last50 = float(np.mean(c.train_loss[-50:]))
    assert last50 == pytest.approx(float(np.mean(ref[f"{name}/train_loss"][-50:])), rel=0.03)
    assert c.test_loss[-1] == pytest.approx(float(ref[f"{name}/test_loss"][-1]), rel=0.03)
    assert c.test_acc[-1] == pytest.approx(float(ref[f"{name}/test_acc"][-1]), abs=0.01)


def test_param_stats_after_early_updates(ref, setup):
    """Σp and Σp² per tensor after 1, 2, 5 and 10 Celo updates (float64 sums)."""
    data, init = setup
    perm = np.asarray(ref["perm"])
    celo = init_lopt_from_ckpt(get_optimizer("celo"), str(CHECKPOINTS / "celo" / "theta.state"))
    order = [str(s) for s in ref["param_stats_tensor_order"]]
    for row, k in enumerate(ref["param_stats_at_updates"][:4]):
        c = demo.train(celo, init, data, perm, int(k), eval_every=int(k), num_steps=1000)
        for col, path in enumerate(order):
            module, param = path.rsplit("/", 1)
            p = np.asarray(c.params[module][param], np.float64)
            want = ref["celo/param_stats"][row, col]
            np.testing.assert_allclose(
                [p.sum(), (p**2).sum()],
                want,
                rtol=1e-4,
                atol=1e-6,
                err_msg=f"{path} after {k} updates",
            )


def test_celo_beats_adam_after_1000_steps(curves):
    assert np.mean(curves["celo"].train_loss[-50:]) < np.mean(curves["adam"].train_loss[-50:])
    assert curves["celo"].test_loss[-1] < curves["adam"].test_loss[-1]
