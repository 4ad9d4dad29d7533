"""Meta-loss curves of a phase-1 and a phase-2 run: one PNG and one CSV.

    python docs/results/meta_training/make_figures.py \\
        --phase1 experiments/train/celo_phase1_run1 --phase2 experiments/train/celo_phase2_run1

Reads each run's ``metrics.npz`` (written by ``celo train``) and writes
``meta_loss.png`` and ``meta_loss.csv`` next to this script.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).parent
COLUMNS = ("average_meta_loss", "grad_norm", "lr_mult_mean")


def load(run_dir: str) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / "metrics.npz") as z:
        return {k.removeprefix("train/"): np.asarray(z[k]) for k in z.files}


def smooth(y: np.ndarray, window: int = 8) -> np.ndarray:
    if len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(np.pad(y, (window - 1, 0), mode="edge"), kernel, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase1", required=True)
    parser.add_argument("--phase2", required=True)
    args = parser.parse_args()
    runs = {"phase 1": load(args.phase1), "phase 2": load(args.phase2)}
    families = sorted({k for r in runs.values() for k in r if k.startswith("family/")})

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (phase, m) in zip(axes, runs.items()):
        xs = m["xs"] + 1
        ax.plot(xs, m["average_meta_loss"], color="0.75", lw=0.8, label="mean of each window")
        ax.plot(xs, smooth(m["average_meta_loss"]), color="C3", lw=2, label="moving average")
        for i, fam in enumerate(families):
            if fam in m:
                short = fam.split("/")[1].split("_", 1)[1].removesuffix("_Relu32_bs64")
                ax.plot(xs, smooth(m[fam]), lw=0.9, color=f"C{i}", alpha=0.8, label=short)
        ax.set_title(f"Celo {phase}")
        ax.set_xlabel("outer iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("meta-loss (normalised train loss, mean over window)")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(HERE / "meta_loss.png", dpi=120)

    with open(HERE / "meta_loss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "iteration", *COLUMNS, *families])
        for phase, m in runs.items():
            for i, x in enumerate(m["xs"]):
                row = [m[c][i] if c in m else "" for c in (*COLUMNS, *families)]
                w.writerow([phase, int(x) + 1, *(f"{v:.6g}" if v != "" else "" for v in row)])
    print(f"wrote {HERE / 'meta_loss.png'} and {HERE / 'meta_loss.csv'}")


if __name__ == "__main__":
    main()
