"""The ``celo`` command line.

Each subcommand lives in its own module under :mod:`celo.commands` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs, so ``celo --help`` stays fast. The CLI is the only
place that reads environment variables and wires trackers and storage into the
library.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand → module in celo.commands (added as the components land).
COMMANDS: dict[str, str] = {
    "train": "celo.commands.train",
    "evaluate": "celo.commands.evaluate",
    "algoperf": "celo.commands.algoperf",
    "publish": "celo.commands.publish",
    "pipeline": "celo.commands.pipeline",
}

DESCRIPTIONS: dict[str, str] = {
    "train": "meta-train a learned optimizer with PES (phase 1, phase 2, baselines)",
    "evaluate": "evaluate optimizers on a task suite and score them against tuned Adam",
    "algoperf": "run the AlgoPerf-lite workloads through the AlgoPerf submission API",
    "publish": "publish a checkpoint with its model card to the Hugging Face Hub",
    "pipeline": "compile, run locally, submit or schedule the Kubeflow pipeline",
}


def _available() -> dict[str, str]:
    out = {}
    for name, module in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = module
    return out


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celo", description="Celo: compute-efficient learned optimizers in JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available().items():
        if only is not None and name != only:
            sub.add_parser(name, help=DESCRIPTIONS.get(name), add_help=False)
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(_available()[args.command])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
