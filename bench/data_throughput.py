"""Data-loading throughput against the cost of one inner training step.

Measures batches per second of the in-RAM iterators for the four fast_velo
batches (8×8 images, batch 64: MNIST, Fashion-MNIST, CIFAR-10 grayscale and
the sklearn digits standing in for SVHN) and for CIFAR-10 at 32×32, batch 128.
It compares them with one jitted inner step of the fast_velo model (MLP
64-32-10, softmax cross-entropy, Adam) on the same batch shape: the ratio
``batches/s ÷ steps/s`` says how many times faster the data arrives than the
step can use it, so it must stay well above 1.

Run from the project root (``CELO_DATA_DIR`` or ``--data-dir`` points at the
data root)::

    python bench/data_throughput.py --data-dir ../shared/datasets --append
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import cpu_model

from celo import data

RESULTS = Path(__file__).parent / "RESULTS.md"
HEADING = "## Data throughput"


def cases(data_dir: str | None) -> dict[str, Callable[[], data.Datasets]]:
    """Name -> dataset factory, for the batches the benchmark measures."""
    return {
        "mnist 8×8 bs64": lambda: data.mnist_datasets(64, (8, 8), data_dir=data_dir),
        "fashion_mnist 8×8 bs64": lambda: data.fashion_mnist_datasets(
            64, (8, 8), data_dir=data_dir
        ),
        "cifar10 gray 8×8 bs64": lambda: data.cifar10_datasets(
            64, (8, 8), convert_to_black_and_white=True, data_dir=data_dir
        ),
        "digits 8×8 bs64": lambda: data.digits_datasets(64, (8, 8)),
        "cifar10 32×32×3 bs128": lambda: data.cifar10_datasets(128, data_dir=data_dir),
    }


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        calls += 50
    return calls / elapsed


def mlp_adam_step(
    batch_size: int, image_shape: tuple[int, ...], hidden: tuple[int, ...]
) -> tuple[Callable[[], object], Callable[[dict], object]]:
    """A jitted image-MLP inner step (ReLU, cross-entropy, Adam) for comparison.

    Returns a zero-argument step on a fixed device-resident batch (the
    reference cost) and a step that takes a numpy batch (data plus step, end
    to end, host-to-device copy included).
    """
    sizes = (int(np.prod(image_shape)), *hidden, 10)
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [
        (jax.random.normal(k, (m, n)) / np.sqrt(m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    opt = optax.adam(1e-3)

    def loss_fn(p, batch):
        h = batch["image"].reshape(batch["image"].shape[0], -1)
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            h = jax.nn.relu(h) if i < len(p) - 1 else h
        return optax.softmax_cross_entropy_with_integer_labels(h, batch["label"]).mean()

    @jax.jit
    def step(p, s, batch):
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = {"params": params, "opt": opt.init(params)}
    fixed = {
        "image": jnp.zeros((batch_size, *image_shape), jnp.float32),
        "label": jnp.zeros((batch_size,), jnp.int32),
    }

    def run(batch):
        state["params"], state["opt"], loss = step(state["params"], state["opt"], batch)
        return loss.block_until_ready()

    return (lambda: run(fixed)), run


def machine() -> str:
    model = cpu_model()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # shared machines skew the figures
    return (
        f"{model}; {os.cpu_count()} cores visible; load average {load} at the start; "
        f"jax {jax.__version__} ({jax.default_backend()}); numpy {np.__version__}; "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data root (default: $CELO_DATA_DIR)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--append", action="store_true", help=f"append to {RESULTS.name}")
    args = parser.parse_args(argv)

    host = machine()
    steps = {
        "bs64": mlp_adam_step(64, (8, 8, 1), (32,)),  # fast_velo: MLP 64-32-10
        "bs128": mlp_adam_step(128, (32, 32, 3), (128, 128, 128)),  # ImageMLP_Cifar10_128x128x128
    }
    steps_per_s = {k: rate(step_only, args.seconds) for k, (step_only, _) in steps.items()}
    rows = []
    for name, make in cases(args.data_dir).items():
        start = time.perf_counter()
        ds = make()
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        make()
        warm_ms = (time.perf_counter() - start) * 1e3
        batches_per_s = rate(lambda it=ds.train: next(it), args.seconds)
        key = name.rsplit(" ", 1)[-1]
        step_with = steps[key][1]
        e2e = rate(lambda it=ds.train, step=step_with: step(next(it)), args.seconds)
        rows.append(
            f"| {name} | {cold_s:.2f} | {warm_ms:.1f} | {batches_per_s:,.0f} | "
            f"{steps_per_s[key]:,.0f} | **{batches_per_s / steps_per_s[key]:.1f}** | {e2e:,.0f} |"
        )

    command = "python " + shlex.join(["bench/data_throughput.py", *sys.argv[1:]])
    report = "\n".join(
        [
            HEADING,
            "",
            f"{datetime.date.today().isoformat()} — `{command}`",
            "",
            f"Machine: {host}.",
            "",
            "Reference inner steps (jitted, Adam, on a device-resident batch): batch 64 → the "
            "fast_velo MLP 64-32-10 on 8×8×1; batch 128 → the 3×128 ReLU MLP of "
            "`ImageMLP_Cifar10_128x128x128_*` on 32×32×3.",
            "",
            "| batches | first build (s) | cached rebuild (ms) | batches/s | inner steps/s | "
            "ratio | data + step /s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "First build decodes (and resizes) the files once per process; later builds reuse "
            "the cache and only create iterators (the two CIFAR-10 rows share one decode). "
            "*Ratio* = batches/s ÷ inner steps/s "
            "(above 1: the step, not the data, sets the pace). *Data + step* is the end-to-end "
            "rate of `step(next(train))` with the host-to-device copy included.",
            "",
        ]
    )
    print(report)
    if args.append:
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
        prefix = "# Benchmark results\n\n" if not existing else ("\n" if existing.strip() else "")
        with open(RESULTS, "a", encoding="utf-8") as f:  # append only: other sections live here
            f.write(prefix + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
