"""Jit-compiled update cost of learned optimizers relative to optax.adam.

Each measurement is one jitted ``update`` mapping state to state (for Adam:
``optax.adam`` plus the parameter write-back), timed as the median of
``--reps`` calls after warm-up. Adam is measured before and after the other
optimizers in the same process and the ratios use the median of both runs.

    python bench/step_cost.py                       # default grid, prints a table
    python bench/step_cost.py --write               # also append to bench/RESULTS.md
    python bench/step_cost.py --sizes 1M --optimizers celo
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from _machine import cpu_model

from celo.factory import get_optimizer

# Hidden widths per size label; input width first, 10 outputs last.
SIZES = {
    "100k": (128, 256, 256, 10),
    "1M": (1024, 512, 512, 512, 10),
    "10M": (2048, 2048, 2048, 1024, 10),
}
RELEASED = {
    "celo": "../shared/checkpoints/celo/theta.state",
    "celo_adam": "../shared/checkpoints/celo_adam/theta.state",
}


def mlp_params(widths, key=jax.random.PRNGKey(0)):
    params = {}
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        key, k = jax.random.split(key)
        params[f"mlp/~/linear_{i}"] = {
            "w": jax.random.normal(k, (a, b), jnp.float32) / jnp.sqrt(a),
            "b": jnp.zeros((b,), jnp.float32),
        }
    return params


CLOCK = time.perf_counter


def _time(fn, args, reps):
    out = fn(*args)
    jax.block_until_ready(out)
    out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(reps):
        t0 = CLOCK()
        jax.block_until_ready(fn(*args))
        times.append(CLOCK() - t0)
    return statistics.median(times)


def time_adam(params, grads, reps):
    tx = optax.adam(1e-3)
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return _time(step, (params, state, grads), reps)


def time_opt(name, params, grads, reps):
    lopt = get_optimizer(name)
    theta = lopt.init(jax.random.PRNGKey(0))
    if name in RELEASED and os.path.exists(RELEASED[name]):
        from celo import checkpoints

        theta = checkpoints.load_state(RELEASED[name], theta)
    opt = lopt.opt_fn(theta)
    state = opt.init(params, num_steps=1000)
    loss = jnp.asarray(1.0, jnp.float32)
    step = jax.jit(lambda s, g, l: opt.update(s, g, loss=l))
    return _time(step, (state, grads, loss), reps)


def machine() -> str:
    model = cpu_model()
    return f"{model}, {os.cpu_count()} cores, jax {jax.__version__}, {platform.python_version()}"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument(
        "--optimizers", nargs="+", default=["celo", "celo_adam", "adafac_mlp", "velo_s"]
    )
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall time, or this process's CPU time (all threads; robust to other jobs on a "
        "shared machine, but counts both cores' work)",
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time

    rows = []
    for size in args.sizes:
        params = mlp_params(SIZES[size])
        n = sum(x.size for x in jax.tree_util.tree_leaves(params))
        grads = jax.tree_util.tree_map(lambda p: 0.01 * jnp.ones_like(p), params)
        adam_before = time_adam(params, grads, args.reps)
        measured = {name: time_opt(name, params, grads, args.reps) for name in args.optimizers}
        adam_after = time_adam(params, grads, args.reps)
        adam = statistics.median([adam_before, adam_after])
        rows.append((size, n, "adam", adam, 1.0))
        for name, t in measured.items():
            rows.append((size, n, name, t, t / adam))
        for r in rows[-(len(measured) + 1) :]:
            print(
                f"{r[0]:>5} {r[1]:>10,} {r[2]:>12} {r[3] * 1e3:9.3f} ms {r[4]:7.2f}x adam",
                flush=True,
            )

    if args.write:
        cmd = (
            "python bench/step_cost.py "
            + " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items()
                if k != "write"
            )
            + " --write"
        )
        lines = [
            f"\n### Update step cost — {datetime.date.today()}, {args.clock} clock\n",
            f"`{cmd}`  \nMachine: {machine()}; load average {os.getloadavg()[0]:.1f} "
            "when written\n",
            "| size | params | optimizer | ms/step | × adam |",
            "|---|---:|---|---:|---:|",
        ]
        lines += [f"| {s} | {n:,} | {o} | {t * 1e3:.3f} | {r:.2f} |" for s, n, o, t, r in rows]
        with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
