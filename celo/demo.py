"""Released Celo against Adam on Fashion-MNIST, the seed README's example.

Trains the 784-128-128-10 ReLU MLP (``ImageMLP_FashionMnist_Relu128x128``)
for 1,000 steps at batch 128 with the released Celo checkpoint and with
``optax.adam(1e-3)`` from the same initialisation and batch order, and prints
the loss curves side by side::

    python -m celo.demo [--steps 1000] [--checkpoint path/to/theta.state]

The batch order is the one of the reference run recorded in
``tests/fixtures/golden/fmnist_mlp_curves.npz`` (a fixed permutation repeated
without reshuffling), so the numbers are comparable to the original
implementation's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from celo.data.image import load_arrays
from celo.factory import get_optimizer
from celo.optimizers.base import Optimizer
from celo.utils import init_lopt_from_ckpt

TASK = "ImageMLP_FashionMnist_Relu128x128"
BATCH = 128
DEFAULT_CHECKPOINT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests",
    "fixtures",
    "checkpoints",
    "celo",
    "theta.state",
)
#: Results of the original implementation on this exact run (fixtures/golden/README.md).
REFERENCE = {
    "celo": {"test_loss": 0.3534, "test_acc": 0.8746, "last50_train": 0.2766},
    "adam": {"test_loss": 0.3971, "test_acc": 0.8549, "last50_train": 0.3619},
}


@dataclass
class Curve:
    train_loss: np.ndarray  # (steps,) batch loss before each update
    test_loss: np.ndarray  # at eval_at
    test_acc: np.ndarray
    eval_at: np.ndarray
    params: dict
    seconds: float


def fashion_mnist(data_dir=None):
    """Flattened float32 images in [0, 1] and labels, train and test, on device."""
    arrays = load_arrays("fashion_mnist", data_dir)
    out = {}
    for split, (x, y) in arrays.items():
        out[split] = (jnp.asarray(x.reshape(len(x), -1), jnp.float32) / 255.0, jnp.asarray(y))
    return out


def batch_indices(perm: np.ndarray, step: int, batch_size: int = BATCH) -> np.ndarray:
    """Batch ``step`` of the index stream ``perm`` repeated without reshuffling."""
    return perm[(batch_size * step + np.arange(batch_size)) % len(perm)]


def _task():
    from celo.tasks import get_task

    return get_task(TASK)


def train(
    opt: Optimizer,
    params: dict,
    data: dict,
    perm: np.ndarray,
    steps: int,
    eval_every: int = 100,
    num_steps: int | None = None,
) -> Curve:
    """``steps`` updates of ``opt`` with the loss passed at every step."""
    task = _task()
    x_train, y_train = data["train"]
    x_test, y_test = data["test"]

    def loss_fn(p, x, y):
        return task.loss(p, jax.random.PRNGKey(0), {"image": x, "label": y})

    @jax.jit
    def chunk(state, idx):
        def body(state, i):
            loss, grad = jax.value_and_grad(loss_fn)(opt.get_params(state), x_train[i], y_train[i])
            return opt.update(state, grad, loss=loss), loss

        return jax.lax.scan(body, state, idx)

    @jax.jit
    def evaluate(p):
        logits = task.logits(p, jax.random.PRNGKey(0), x_test)
        return loss_fn(p, x_test, y_test), jnp.mean(jnp.argmax(logits, -1) == y_test)

    state = opt.init(params, num_steps=num_steps or steps)
    losses, tl, ta, at = [], [], [], []
    t0 = time.perf_counter()
    for start in range(0, steps, eval_every):
        p = opt.get_params(state)
        l, a = evaluate(p)
        tl.append(float(l)), ta.append(float(a)), at.append(start)
        n = min(eval_every, steps - start)
        idx = np.stack([batch_indices(perm, start + i) for i in range(n)])
        state, chunk_losses = chunk(state, jnp.asarray(idx))
        losses.append(np.asarray(chunk_losses))
    p = opt.get_params(state)
    l, a = evaluate(p)
    tl.append(float(l)), ta.append(float(a)), at.append(steps)
    jax.block_until_ready(p)
    return Curve(
        np.concatenate(losses),
        np.array(tl),
        np.array(ta),
        np.array(at),
        p,
        time.perf_counter() - t0,
    )


def init_params(seed: int = 0) -> dict:
    return _task().init(jax.random.PRNGKey(seed))


def _sparkline(values: np.ndarray, width: int = 50) -> str:
    bars = "▁▂▃▄▅▆▇█"
    v = np.asarray(values)[:: max(1, len(values) // width)]
    lo, hi = float(v.min()), float(v.max())
    return "".join(bars[int((x - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for x in v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="released Celo theta.state")
    ap.add_argument("--data-dir", default=None, help="data root (default: $CELO_DATA_DIR)")
    args = ap.parse_args(argv)

    data = fashion_mnist(args.data_dir)
    perm = np.random.RandomState(0).permutation(len(data["train"][1]))
    params = init_params(0)
    celo = init_lopt_from_ckpt(get_optimizer("celo"), args.checkpoint)
    adam = get_optimizer("adam", learning_rate=1e-3)
    print(f"Fashion-MNIST, {TASK}, batch {BATCH}, {args.steps} steps, same init and batches\n")
    curves = {}
    for name, opt in (("adam", adam), ("celo", celo)):
        curves[name] = train(opt, params, data, perm, args.steps)
        print(f"  {name:>5}: {curves[name].seconds:5.1f} s (incl. compile)")
    print("\n  step   adam train loss   celo train loss")
    for s in range(0, args.steps, max(1, args.steps // 10)):
        window = slice(max(0, s - 24), s + 1)
        print(
            f"  {s:>4}   {np.mean(curves['adam'].train_loss[window]):15.4f}   "
            f"{np.mean(curves['celo'].train_loss[window]):15.4f}"
        )
    print()
    for name in ("adam", "celo"):
        c = curves[name]
        print(
            f"  {name:>5} {_sparkline(c.train_loss)}  final test loss {c.test_loss[-1]:.4f}, "
            f"test acc {c.test_acc[-1]:.4f}, mean of last 50 train losses "
            f"{np.mean(c.train_loss[-50:]):.4f}"
        )
    if args.steps == 1000:
        print(
            "\n  original implementation (same run): "
            + ", ".join(
                f"{n} test loss {r['test_loss']:.4f} acc {r['test_acc']:.4f}"
                for n, r in REFERENCE.items()
            )
        )
    better = np.mean(curves["celo"].train_loss[-50:]) < np.mean(curves["adam"].train_loss[-50:])
    print(f"\n  Celo {'beats' if better else 'does not beat'} Adam(1e-3) on this run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
