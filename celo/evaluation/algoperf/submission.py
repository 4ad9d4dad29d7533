"""An AlgoPerf v0.6 JAX submission for any registered optimizer.

The five functions below have the exact v0.6 signatures. A learned optimizer
is loaded from its ``theta.state`` and initialised with the horizon
``workload.step_hint``; the training loss is passed to it at every step.
The train step is one ``jax.jit`` with shardings (replicated parameters and
optimizer state, batch split along its first axis over all devices), not
``pmap``.

Choose the optimizer with :func:`configure` before the runner calls
:func:`init_optimizer_state`. For the real AlgoPerf runner, ``celo algoperf
export`` writes a ``submission.py`` that configures this module and re-exports
the five functions (see ``docs/algoperf.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

try:  # the real benchmark when it is installed, the in-repo mirror otherwise
    from algoperf import spec
except ImportError:  # pragma: no cover - which branch runs depends on the environment
    from celo.evaluation.algoperf import spec

log = logging.getLogger(__name__)

#: Global batch sizes: the reference's for the AlgoPerf workloads, plus AlgoPerf-lite's.
BATCH_SIZES: dict[str, int] = {
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1024,
    "imagenet_vit": 1024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "ogbg": 512,
    "wmt": 128,
    "mnist": 16,
    "fashion_mnist_cnn": 64,
    "shakespeare_char_lm": 32,
    "mnist_autoencoder": 64,
}
DEFAULT_BATCH_SIZE = 128

_CONFIG: dict[str, Any] = {"optimizer": "celo_adam", "checkpoint": None, "learning_rate": 1e-3}


def configure(
    optimizer: str, checkpoint: str | None = None, learning_rate: float | None = None
) -> None:
    """Select the optimizer (and theta checkpoint, or default learning rate) to submit.

    Args:
      optimizer: a registry name (``celo.factory.names()``).
      checkpoint: ``theta.state`` of a learned optimizer (required for those).
      learning_rate: for hand-designed optimizers, used when the runner passes
        no hyperparameters (the self-tuning ruleset).
    """
    _CONFIG.update(optimizer=optimizer, checkpoint=checkpoint)
    if learning_rate is not None:
        _CONFIG["learning_rate"] = float(learning_rate)


class SubmissionState(NamedTuple):
    """The opaque ``optimizer_state`` the runner carries between calls."""

    opt_state: Any
    train_step: Any
    name: str


def _build(hyperparameters) -> Any:
    from celo.factory import get_optimizer, is_learned
    from celo.utils import init_lopt_from_ckpt

    name = _CONFIG["optimizer"]
    if is_learned(name):
        if not _CONFIG["checkpoint"]:
            raise ValueError(f"learned optimizer {name!r} needs configure(name, checkpoint=...)")
        return init_lopt_from_ckpt(get_optimizer(name), _CONFIG["checkpoint"])
    lr = getattr(hyperparameters, "learning_rate", None) or _CONFIG["learning_rate"]
    return get_optimizer(name, learning_rate=lr)


def get_batch_size(workload_name: str) -> int:
    """The global training batch size for ``workload_name``."""
    return BATCH_SIZES.get(workload_name, DEFAULT_BATCH_SIZE)


def init_optimizer_state(
    workload: spec.Workload, model_params: Any, model_state: Any, hyperparameters: Any, rng: Any
) -> SubmissionState:
    """Build the optimizer with horizon ``workload.step_hint`` and its jitted train step."""
    del rng
    opt = _build(hyperparameters)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, model_params)
    opt_state = opt.init(zeros, model_state=None, num_steps=int(workload.step_hint))
    label_smoothing = float(getattr(hyperparameters, "label_smoothing", 0.0) or 0.0)

    def train_step(opt_state, params, model_state, batch, rng):
        def loss_fn(p):
            logits, new_model_state = workload.model_fn(
                p, batch, model_state, spec.ForwardPassMode.TRAIN, rng, update_batch_norm=True
            )
            out = workload.loss_fn(
                label_batch=batch["targets"],
                logits_batch=logits,
                mask_batch=batch.get("weights"),
                label_smoothing=label_smoothing,
            )
            n = jnp.maximum(out["n_valid_examples"], 1)
            return out["summed"] / n, new_model_state

        (loss, new_model_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # The runner owns the parameters; the optimizer state carries a copy.
        opt_state = opt.set_params(opt_state, params)
        opt_state = opt.update(opt_state, grad, loss=loss, model_state=new_model_state, key=rng)
        grad_norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grad)))
        return opt_state, opt.get_params(opt_state), new_model_state, loss, grad_norm

    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("batch"))
    step = jax.jit(
        train_step,
        in_shardings=(replicated, replicated, replicated, sharded, replicated),
        out_shardings=replicated,
    )
    return SubmissionState(opt_state, step, getattr(opt, "name", type(opt).__name__))


def update_params(
    workload: spec.Workload,
    current_param_container: Any,
    current_params_types: Any,
    model_state: Any,
    hyperparameters: Any,
    batch: dict[str, Any],
    loss_type: spec.LossType,
    optimizer_state: SubmissionState,
    eval_results: list[tuple[int, float]],
    global_step: int,
    rng: Any,
    train_state: dict[str, Any] | None = None,
) -> tuple[SubmissionState, Any, Any]:
    """One timed training step: returns (new_optimizer_state, new_params, new_model_state)."""
    del workload, current_params_types, hyperparameters, loss_type, eval_results, train_state
    opt_state, params, model_state, loss, grad_norm = optimizer_state.train_step(
        optimizer_state.opt_state, current_param_container, model_state, batch, rng
    )
    if global_step % 100 == 0:
        log.info("step %d: loss %.4f, grad norm %.4f", global_step, float(loss), float(grad_norm))
    return optimizer_state._replace(opt_state=opt_state), params, model_state


def prepare_for_eval(
    workload: spec.Workload,
    current_param_container: Any,
    current_params_types: Any,
    model_state: Any,
    hyperparameters: Any,
    loss_type: spec.LossType,
    optimizer_state: SubmissionState,
    eval_results: list[tuple[int, float]],
    global_step: int,
    rng: Any,
) -> tuple[SubmissionState, Any, Any]:
    """The identity, except for schedule-free AdamW, which evaluates at its averaged point."""
    del workload, current_params_types, hyperparameters, loss_type, eval_results, global_step, rng
    params = current_param_container
    if optimizer_state.name == "schedule_free_adamw":
        import optax.contrib

        params = optax.contrib.schedule_free_eval_params(
            optimizer_state.opt_state.optax_opt_state, params
        )
    return optimizer_state, params, model_state


def data_selection(
    workload: spec.Workload,
    input_queue: Iterator[dict[str, Any]],
    optimizer_state: SubmissionState,
    current_param_container: Any,
    model_state: Any,
    hyperparameters: Any,
    global_step: int,
    rng: Any,
) -> dict[str, Any]:
    """The next batch of the workload's queue, unchanged."""
    del workload, optimizer_state, current_param_container, model_state, hyperparameters
    del global_step, rng
    return next(input_queue)
