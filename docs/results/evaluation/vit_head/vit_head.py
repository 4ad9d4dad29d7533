"""Is Celo's ViT gap its zero-initialised classifier head?

The reference ViT (google-research/vision_transformer, used by the reference's
``VIT_*`` tasks) initialises the head kernel to zeros. Celo scales every step by
the RMS of the tensor it updates (spec §4.7, quirk 20), so a zero tensor moves
at about 3e-8 per step at first. This script reruns the evaluation grid's runs
with the head kernel drawn like the patch embedding (LeCun-normal) instead, and
writes the curves and final smoothed training losses next to the grid's
zero-head runs (``../cells``), which used the same batches and keys.

    CELO_DATA_DIR=../shared/datasets python docs/results/evaluation/vit_head/vit_head.py \
        --task VIT_Cifar100_skinnydeep \
        --optimizers celo=tests/fixtures/checkpoints/celo/theta.state adam@3e-4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from celo.evaluation import cells, scoring, specs
from celo.evaluation.inner_train import CurveConfig, CurveRunner
from celo.evaluation.jobs import EVAL_SEED_OFFSET
from celo.lopt.nets import truncated_normal
from celo.tasks import get_task
from celo.tasks.vit import _TRUNC_STD

HERE = Path(__file__).resolve().parent
GRID = HERE.parent


def with_random_head(task):
    """``task`` with its head kernel drawn as LeCun-normal instead of zeros."""
    init = task.init

    def init_random_head(key):
        params = init(key)  # every other tensor as in the grid's runs
        kernel = params["params"]["head"]["kernel"]
        std = np.sqrt(1.0 / kernel.shape[0]) / _TRUNC_STD
        sub = jax.random.fold_in(key, 1)
        params["params"]["head"]["kernel"] = truncated_normal(sub, kernel.shape, std)
        return params

    task.init = init_random_head
    return task


def with_rank2_attention(task):
    """``task`` with its attention tensors stored as a plain Dense layer's.

    The reference's attention kernels are rank 3 (``(hidden, heads, head_dim)``
    and ``(heads, head_dim, hidden)``) and the q/k/v biases rank 2, so Celo's
    factored statistics see other axes than in a Dense layer. Here they are
    stored flat (``(hidden, heads·head_dim)``, ``(heads·head_dim, hidden)``,
    ``(heads·head_dim,)``) and reshaped back inside the loss: the model is the
    same function of the same numbers, only the optimizer sees other shapes.
    """
    init, loss = task.init, task.loss_with_state
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))

    def flat(path, x):
        keys = [k.key for k in path]
        if not any(k.startswith("MultiHeadDotProductAttention") for k in keys):
            return x
        if x.ndim == 3:
            out = keys[-2] == "out"
            return x.reshape(-1, x.shape[-1]) if out else x.reshape(x.shape[0], -1)
        return x.reshape(-1)

    task.init = lambda key: jax.tree_util.tree_map_with_path(flat, init(key))
    task.loss_with_state = lambda params, state, key, data: loss(
        jax.tree_util.tree_map(lambda x, s: x.reshape(s.shape), params, shapes), state, key, data
    )
    return task


def grid_final(label: str, task: str, tag: str, steps: int) -> float | None:
    """Smoothed training loss after ``steps`` of the grid's (zero-head) run, if committed."""
    cell = cells.Cell(label, task, 0, tag)
    if cells.read_info(str(GRID), cell) is None:
        return None
    loss = cells.read_curve(str(GRID), cell)["train/loss"]
    return scoring.final_value(scoring.ema(loss[:steps]))


def plot(task: str, output: Path) -> Path:
    """Smoothed training curves: the grid's runs and every variant run here."""
    from matplotlib.figure import Figure

    runs = {
        f"{label}, zero head (grid)": cells.read_curve(str(GRID), cells.Cell(label, task, 0, tag))
        for label, tag in (("adam", "lr_3e-04"), ("celo", "theta"))
    }
    for path in sorted((output / "cells").glob(f"*/{task}/seed_0/*.npz")):
        if path.stem in ("celo_theta", "adam_lr_3e-04"):
            runs[f"{path.stem.split('_')[0]}, {path.parts[-4].replace('_', ' ')}"] = np.load(path)
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for label, curve in runs.items():
        loss = curve["train/loss"]
        ax.plot(np.arange(1, len(loss) + 1), scoring.ema(loss), lw=1.4, label=label)
    ax.set_yscale("log")
    ax.set_title(f"{task}: smoothed training loss (Adam at 3e-4)", fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    fig.tight_layout()
    out = output / f"curves_{task}.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--optimizers", nargs="*", default=[], help="as for celo evaluate")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument(
        "--head",
        choices=("random", "zero"),
        default="random",
        help="zero: the task as it is, to check that the runs reproduce the grid's",
    )
    p.add_argument(
        "--attention",
        choices=("rank3", "rank2"),
        default="rank3",
        help="rank2: store the attention tensors as a Dense layer's (same model)",
    )
    p.add_argument("--output", type=Path, default=HERE)
    args = p.parse_args()
    variant = f"{args.head}_head" + ("_rank2_attention" if args.attention == "rank2" else "")
    results = {}
    for text in args.optimizers:
        spec = specs.parse_optimizer(text)
        build, hps = specs.build(spec)
        for tag, hp in hps.items():
            task = get_task(args.task, seed=0)
            if args.head == "random":
                task = with_random_head(task)
            if args.attention == "rank2":
                task = with_rank2_attention(task)
            evals = get_task(args.task, seed=EVAL_SEED_OFFSET).datasets
            runner = CurveRunner(task, build, CurveConfig(args.steps, eval_every=100))
            t0 = time.perf_counter()
            curve = runner.run(hp, get_task(args.task, seed=0).datasets, evals)
            name = f"{spec.label}_{tag}"
            cells.save_cell(
                str(args.output),
                cells.Cell(variant, args.task, 0, name),
                curve.arrays(),
                {"summary": curve.summary(), "wall_seconds": time.perf_counter() - t0},
            )
            results[name] = {
                "final_smoothed": scoring.final_value(scoring.ema(curve.train_loss)),
                "grid_zero_head_final_smoothed": grid_final(spec.label, args.task, tag, args.steps),
                "test_loss": curve.eval_loss["test"][-1].item(),
            }
            print(json.dumps({name: results[name]}), flush=True)
    if results:
        out = args.output / f"{args.task}_{variant}.json"
        out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(plot(args.task, args.output))


if __name__ == "__main__":
    main()
