"""Compile every pipeline to the committed YAML (``make pipelines``).

    python -m pipelines.compile                 # all files, in pipelines/
    python -m pipelines.compile --target gpu    # only the GPU variants
    python -m pipelines.compile --check         # exit 1 if a committed file drifted

Files: ``celo_full.yaml`` and ``reeval.yaml`` (CPU node pools; these are also
what ``celo pipeline run --local`` runs), and ``celo_full_gpu.yaml``,
``celo_full_tpu.yaml``, ``reeval_gpu.yaml`` with the accelerator stages on
GPU or TPU node pools.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

from kfp import compiler

from pipelines import celo_full, reeval

HERE = os.path.dirname(os.path.abspath(__file__))

#: file name → (builder, target)
OUTPUTS = {
    "celo_full.yaml": (celo_full.build, "cpu"),
    "celo_full_gpu.yaml": (celo_full.build, "gpu"),
    "celo_full_tpu.yaml": (celo_full.build, "tpu"),
    "reeval.yaml": (reeval.build, "cpu"),
    "reeval_gpu.yaml": (reeval.build, "gpu"),
}
_SDK = re.compile(r"^(# PIPELINE INFO.*\n)?sdkVersion: kfp-\S+$", re.M)


def normalise(text: str) -> str:
    """The YAML with the SDK version taken out: the only field allowed to differ."""
    return re.sub(r"(?m)^sdkVersion: kfp-\S+$", "sdkVersion: kfp-X", text)


def compile_to(out_dir: str, target: str = "all") -> list[str]:
    """Compile the files of ``target`` (``cpu``, ``gpu``, ``tpu`` or ``all``) into ``out_dir``."""
    written = []
    for name, (build, t) in OUTPUTS.items():
        if target in ("all", t):
            path = os.path.join(out_dir, name)
            compiler.Compiler().compile(build(t), path)
            written.append(path)
    return written


def drifted(target: str = "all", committed_dir: str = HERE) -> list[str]:
    """Committed files that differ from a fresh compile (SDK version aside)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in compile_to(tmp, target):
            name = os.path.basename(fresh)
            old = os.path.join(committed_dir, name)
            with open(fresh) as f:
                new_text = f.read()
            if not os.path.exists(old):
                out.append(name)
                continue
            with open(old) as f:
                if normalise(f.read()) != normalise(new_text):
                    out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.compile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="all", choices=["all", "cpu", "gpu", "tpu"])
    p.add_argument("--out-dir", default=HERE)
    p.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = p.parse_args(argv)
    if args.check:
        bad = drifted(args.target, args.out_dir)
        for name in bad:
            print(f"{name} differs from its source: run `make pipelines`", file=sys.stderr)
        return 1 if bad else 0
    for path in compile_to(args.out_dir, args.target):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
