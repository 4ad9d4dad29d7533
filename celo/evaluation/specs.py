"""Which optimizers an evaluation runs, as written on the command line.

An optimizer is given as ``NAME``, ``NAME@LR,LR,…``, ``NAME=CHECKPOINT`` or
``LABEL:NAME=CHECKPOINT``:

* ``adam`` — a hand-designed optimizer, tuned over the command's learning-rate grid;
* ``sgd@0.01,0.1,1`` — the same, tuned over its own grid (optimizers differ in
  where their good learning rates lie, so a short sweep needs a grid per optimizer);
* ``celo=path/to/theta.state`` — a learned optimizer with its meta-parameters;
* ``celo=hf://amoudgl/celo`` — the same, downloaded from the Hugging Face Hub;
* ``mine:celo=runs/x/theta.state`` — a custom label, so that two checkpoints of
  one optimizer can be compared in one output folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from celo import storage
from celo.factory import get_optimizer, is_learned
from celo.optimizers.registry import canonical_name

HF_PREFIX = "hf://"

#: Half-decade learning rates from 1e-5 to 1 (the issue's default grid).
DEFAULT_LR_GRID: tuple[float, ...] = tuple(float(x) for x in np.logspace(-5, 0, 11))


def lr_tag(lr: float) -> str:
    """A file-name tag for a learning rate: ``lr_3e-04``."""
    return f"lr_{lr:.0e}" if float(f"{lr:.0e}") == lr else f"lr_{lr:.3e}"


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer of an evaluation.

    Attributes:
      label: the name results are stored and reported under.
      name: the registry name (``celo.factory.names()``).
      checkpoint: a local path, ``gs://`` path or ``hf://owner/repo`` (learned only).
      lrs: the learning-rate grid (hand-designed only).
    """

    label: str
    name: str
    checkpoint: str | None = None
    lrs: tuple[float, ...] = ()

    @property
    def learned(self) -> bool:
        return is_learned(self.name)

    def tags(self) -> list[str]:
        """One tag per run of this optimizer on a (task, seed): the LRs, or ``theta``."""
        return ["theta"] if self.learned else [lr_tag(lr) for lr in self.lrs]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "checkpoint": self.checkpoint,
            "lrs": list(self.lrs),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OptimizerSpec:
        return cls(d["label"], d["name"], d.get("checkpoint"), tuple(d.get("lrs") or ()))


def _parse_grid(text: str, grid: str) -> tuple[float, ...]:
    try:
        lrs = tuple(float(x) for x in grid.split(","))
    except ValueError:
        lrs = ()
    if not lrs or not all(np.isfinite(lr) and lr > 0 for lr in lrs):
        raise ValueError(
            f"{text!r}: the learning-rate grid after '@' must be positive numbers "
            f"separated by commas, e.g. sgd@0.01,0.1,1"
        )
    if len({lr_tag(lr) for lr in lrs}) != len(lrs):
        raise ValueError(f"{text!r}: the learning-rate grid repeats a value")
    return lrs


def parse_optimizer(text: str, lrs: Sequence[float] = DEFAULT_LR_GRID) -> OptimizerSpec:
    """Parse ``[LABEL:]NAME[@LR,LR,…][=CHECKPOINT]``; see the module docstring.

    Raises:
      ValueError: for a learned optimizer without a checkpoint, a checkpoint or
        a learning-rate grid given to the wrong kind of optimizer, or a grid
        that is not positive numbers.
    """
    label, rest = text.split(":", 1) if ":" in text.split("=", 1)[0] else (None, text)
    name, checkpoint = (rest.split("=", 1) + [None])[:2]
    name, grid = (name.split("@", 1) + [None])[:2]
    name = canonical_name(name)
    label = label or name
    if is_learned(name):
        if not checkpoint:
            raise ValueError(
                f"{text!r}: learned optimizer {name!r} needs its meta-parameters: "
                f"write {name}=path/to/theta.state or {name}=hf://owner/repo"
            )
        if grid is not None:
            raise ValueError(f"{text!r}: learned optimizer {name!r} takes no learning-rate grid")
        return OptimizerSpec(label, name, checkpoint)
    if checkpoint:
        raise ValueError(f"{text!r}: {name!r} is hand-designed and takes no checkpoint")
    if grid is not None:
        return OptimizerSpec(label, name, None, _parse_grid(text, grid))
    return OptimizerSpec(label, name, None, tuple(float(x) for x in lrs))


def local_checkpoint(checkpoint: str) -> str:
    """A readable path for ``checkpoint`` (``hf://`` repos are downloaded to the HF cache)."""
    if checkpoint.startswith(HF_PREFIX):
        from celo import hub

        return hub.download(checkpoint[len(HF_PREFIX) :])
    return checkpoint


def check_checkpoint(spec: OptimizerSpec) -> None:
    """Fetch and load a learned optimizer's checkpoint once, before any cell runs.

    Raises ``ValueError`` naming the optimizer and the checkpoint when it cannot be
    downloaded, read, or loaded into the optimizer's theta (wrong keys or shapes), so
    that a bad spec fails the command at once instead of every one of its cells.
    """
    if not spec.learned:
        return
    from celo.checkpoints import CheckpointError
    from celo.hub import HubError

    try:
        build(spec)
    except (HubError, OSError, CheckpointError) as e:
        raise ValueError(
            f"optimizer {spec.label!r}: cannot use checkpoint {spec.checkpoint!r}: {e}"
        ) from e


def checkpoint_digest(checkpoint: str) -> str:
    """sha256 of the checkpoint's bytes, recorded with every result it produced."""
    return hashlib.sha256(storage.read_bytes(local_checkpoint(checkpoint))).hexdigest()


def build(spec: OptimizerSpec) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """``(build_opt, {tag: hyperparameters})`` for a :class:`~.inner_train.CurveRunner`.

    For a learned optimizer the hyperparameters are its theta, loaded from the
    checkpoint; for a hand-designed one, one learning rate per grid point.
    """
    if spec.learned:
        import jax

        from celo import checkpoints

        lopt = get_optimizer(spec.name)
        template = lopt.init(jax.random.PRNGKey(0))
        path = local_checkpoint(spec.checkpoint)
        theta = checkpoints.from_bytes(template, storage.read_bytes(path), source=path)
        return lopt.opt_fn, {"theta": theta}
    name = spec.name
    return (lambda lr: get_optimizer(name, learning_rate=lr)), {
        lr_tag(lr): np.float32(lr) for lr in spec.lrs
    }
