"""Meta-training speed: compile time and seconds per outer iteration of the phase-1 recipe.

The recipe is the reference's phase 1 (``celo train --preset phase1``): celo_phase1 on
the four fast_velo families, 8 particles each, trunc 50, steps_per_jit 10, global
reparameterisation, horizons LogUniform(100, 2000). The script reports

* ``build``: data loading, family grouping and theta's initialisation;
* ``init``: building the inner problems (one program, compiled cheaply);
* ``lower`` and ``compile``: tracing and XLA compilation of the outer iteration;
* ``first``: the first call of the compiled iteration;
* per-iteration times in several blocks, with the median of the block medians.

Process CPU time is reported next to wall time, and the load average before and
after, because the machines this runs on are often shared.

Usage::

    python bench/meta_train.py [--iterations 20] [--blocks 3] [--append]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
from _machine import cpu_model

from celo.meta import configs, trainer

RESULTS = Path(__file__).with_name("RESULTS.md")
REFERENCE = {"s_per_iter": 2.01, "compile_s": 52.6, "metrics_compile_s": 24.6, "init_s": 14.6}


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - w, time.process_time() - c


def _load() -> float:
    return os.getloadavg()[0]


def measure(iterations: int, blocks: int, **overrides) -> dict:
    cfg = configs.phase1(experiment_root="/tmp", **overrides)
    load_before = _load()
    setup, build_w, build_c = _timed(lambda: trainer.build(cfg))
    state, init_w, init_c = _timed(lambda: trainer.init_state(setup, cfg.seed))

    def lower():
        with jax.threefry_partitionable(False):
            return jax.jit(setup.learner.step, donate_argnums=0).lower(state, setup.data)

    lowered, lower_w, lower_c = _timed(lower)
    step, compile_w, compile_c = _timed(
        lambda: lowered.compile(compiler_options=trainer.STEP_COMPILE)
    )
    (state, _), first_w, _ = _timed(lambda: step(state, setup.data))
    medians, cpu_medians = [], []
    for _ in range(blocks):
        times, cpu = [], []
        for _ in range(iterations):
            (state, _), w, c = _timed(functools.partial(step, state, setup.data))
            times.append(w)
            cpu.append(c)
        medians.append(float(np.median(times)))
        cpu_medians.append(float(np.median(cpu)))
    return {
        "build_s": build_w,
        "init_s": init_w,
        "init_cpu_s": init_c,
        "lower_s": lower_w,
        "lower_cpu_s": lower_c,
        "compile_s": compile_w,
        "compile_cpu_s": compile_c,
        "total_compile_s": init_w + lower_w + compile_w,
        "first_iteration_s": first_w,
        "block_medians_s": medians,
        "s_per_iter": float(np.median(medians)),
        "cpu_s_per_iter": float(np.median(cpu_medians)),
        "load_before": load_before,
        "load_after": _load(),
        "devices": len(jax.devices()),
    }


def machine() -> str:
    return f"{cpu_model()}; {os.cpu_count()} cores visible"


def markdown(r: dict, command: str) -> str:
    ref = REFERENCE
    day = datetime.date.today().isoformat()
    blocks = r["block_medians_s"]
    return (
        "\n".join(
            [
                "",
                "## Meta-training",
                "",
                f"{day} — `{command}`",
                "",
                f"Machine: {machine()}; jax {jax.__version__} (cpu), {r['devices']} device(s); "
                f"load average {r['load_before']:.1f} before, {r['load_after']:.1f} after.",
                "",
                "Recipe: phase 1 (celo_phase1, fast_velo = 4 families × 8 particles × 2 signs, "
                "trunc 50, steps_per_jit 10, global reparam, LogUniform(100, 2000), AdamW 3e-4).",
                "",
                "| quantity | this implementation | reference |",
                "|---|---|---|",
                f"| seconds per outer iteration (median of {len(blocks)} block medians) "
                f"| **{r['s_per_iter']:.3f}** (blocks: {', '.join(f'{m:.3f}' for m in blocks)}) "
                f"| {ref['s_per_iter']} |",
                "| process CPU seconds per outer iteration (all threads) "
                f"| {r['cpu_s_per_iter']:.3f} | – |",
                "| compile of the outer iteration (trace + XLA) "
                f"| **{r['lower_s'] + r['compile_s']:.1f} s** "
                f"(trace {r['lower_s']:.1f} s, XLA {r['compile_s']:.1f} s wall / "
                f"{r['compile_cpu_s']:.1f} s CPU) | {ref['compile_s']} s (first iteration) + "
                f"{ref['metrics_compile_s']} s (first metrics) |",
                f"| inner-problem initialisation (incl. its compile) | {r['init_s']:.1f} s | "
                f"{ref['init_s']} s |",
                f"| total compile (init + trace + XLA) | **{r['total_compile_s']:.1f} s** | "
                f"{ref['compile_s'] + ref['metrics_compile_s']:.1f} s |",
                f"| first iteration after compiling | {r['first_iteration_s']:.2f} s | – |",
                f"| data + families + theta (build) | {r['build_s']:.1f} s | – |",
                "",
                "Metrics are computed inside the compiled iteration, so there is no second compile "
                "when they are first logged.",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--append", action="store_true", help=f"append to {RESULTS.name}")
    args = parser.parse_args()
    result = measure(args.iterations, args.blocks)
    print(json.dumps(result, indent=2))
    if args.append:
        command = (
            f"python bench/meta_train.py --iterations {args.iterations} --blocks {args.blocks}"
        )
        with open(RESULTS, "a") as f:
            f.write(markdown(result, command))


if __name__ == "__main__":
    main()
