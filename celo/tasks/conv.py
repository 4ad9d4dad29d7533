"""Small convnets (learned_optimization ``tasks/fixed/conv.py``, Appendix A.1).

Three 3×3 convolutions (the first with stride 2, XLA "SAME" padding), each
followed by the activation and an optional norm, then a spatial mean and a
linear classifier. Parameters ``conv2_d``, ``conv2_d_1`` … and ``linear``;
the state is ``{}`` (or the BatchNorm moving averages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from celo.tasks import layers
from celo.tasks.base import Task, classification_normalizer, ones_like_batch, softmax_cross_entropy
from celo.tasks.sources import image_source

NORMS = ("none", "batch_norm", "layer_norm")


def _suffix(i: int) -> str:
    return "" if i == 0 else f"_{i}"


class _ConvTask(Task):
    """Conv → activation → norm blocks, mean pool, linear, softmax cross-entropy.

    Args:
      datasets: a ``Datasets`` or a :class:`~celo.tasks.base.DataSpec`.
      hidden_units: output channels of each conv (the first has stride 2).
      activation: activation after each conv.
      norm: "none", "batch_norm" (train mode, decay 0.9) or "layer_norm" (last axis).
      num_classes: classes of the linear head.
      name: task name.
    """

    def __init__(
        self,
        datasets,
        hidden_units: Sequence[int] = (32, 64, 64),
        activation: Callable[[jnp.ndarray], jnp.ndarray] = jax.nn.relu,
        norm: str = "none",
        *,
        num_classes: int = 10,
        name: str | None = None,
    ):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        self.datasets = datasets
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self.norm = norm
        self.num_classes = int(num_classes)
        self._name = name

    def init_with_state(self, key: jax.Array) -> tuple[dict, dict]:
        keys = layers.KeySeq(key)
        params, state = {}, {}
        c_in = self.abstract_batch["image"].shape[-1]
        for i, c_out in enumerate(self.hidden_units):
            params[f"conv2_d{_suffix(i)}"] = layers.conv2d_init(keys, c_in, c_out)
            if self.norm == "layer_norm":
                params[f"layer_norm{_suffix(i)}"] = layers.layer_norm_init(c_out)
            elif self.norm == "batch_norm":
                name = f"batch_norm{_suffix(i)}"
                params[name], ema = layers.batch_norm_init((1, 1, 1, c_out))
                state[f"{name}/~/mean_ema"] = ema["mean_ema"]
                state[f"{name}/~/var_ema"] = ema["var_ema"]
            c_in = c_out
        params["linear"] = layers.linear_init(keys, c_in, self.num_classes)
        if state:
            # haiku's init runs the model once, so the moving averages start advanced.
            _, state = self._logits(params, state, ones_like_batch(self.abstract_batch)["image"])
        return params, state

    def _logits(self, params: dict, state: dict | None, image: jnp.ndarray):
        net, new_state = image, {}
        for i, _ in enumerate(self.hidden_units):
            net = layers.conv2d(params[f"conv2_d{_suffix(i)}"], net, stride=2 if i == 0 else 1)
            net = self.activation(net)
            if self.norm == "layer_norm":
                net = layers.layer_norm(params[f"layer_norm{_suffix(i)}"], net, axis=-1)
            elif self.norm == "batch_norm":
                name = f"batch_norm{_suffix(i)}"
                ema = layers.batch_norm_ema(state, name, (1, 1, 1, net.shape[-1]))
                net, ema = layers.batch_norm_train(params[name], ema, net)
                new_state[f"{name}/~/mean_ema"] = ema["mean_ema"]
                new_state[f"{name}/~/var_ema"] = ema["var_ema"]
        net = jnp.mean(net, axis=(1, 2))
        return layers.linear(params["linear"], net), new_state

    def loss_with_state_and_aux(self, params, state, key, data):
        del key
        logits, state = self._logits(params, state, data["image"])
        labels = jax.nn.one_hot(data["label"], self.num_classes)
        return jnp.mean(softmax_cross_entropy(logits=logits, labels=labels)), state, {}

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        # The reference clips without mapping NaN to the cap; we map it, as the
        # image MLPs do, so one diverged inner problem cannot poison a meta-loss.
        return classification_normalizer(loss, self.num_classes)


def _conv(
    name,
    dataset,
    hidden=(32, 64, 64),
    act=jax.nn.relu,
    norm="none",
    size=None,
    num_classes=10,
    *,
    data_dir=None,
    seed=0,
):
    data = image_source(dataset, 128, size, data_dir=data_dir, seed=seed)
    return _ConvTask(data, hidden, act, norm, num_classes=num_classes, name=name)


def Conv_Cifar10_32x64x64(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64, ReLU, on 32×32 CIFAR-10, batch 128 (56,970 parameters)."""
    return _conv("Conv_Cifar10_32x64x64", "cifar10", data_dir=data_dir, seed=seed)


def Conv_Cifar10_16_32x64x64(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64, ReLU, on CIFAR-10 resized to 16×16, batch 128."""
    return _conv("Conv_Cifar10_16_32x64x64", "cifar10", size=(16, 16), data_dir=data_dir, seed=seed)


def Conv_Cifar10_32x64x64_Tanh(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64, tanh, on CIFAR-10, batch 128."""
    return _conv(
        "Conv_Cifar10_32x64x64_Tanh", "cifar10", act=jnp.tanh, data_dir=data_dir, seed=seed
    )


def Conv_Cifar10_32x64x64_batchnorm(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64, ReLU then BatchNorm (train mode, decay 0.9), on CIFAR-10, batch 128."""
    return _conv(
        "Conv_Cifar10_32x64x64_batchnorm",
        "cifar10",
        norm="batch_norm",
        data_dir=data_dir,
        seed=seed,
    )


def Conv_Cifar10_32x64x64_layernorm(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64, ReLU then LayerNorm over channels, on CIFAR-10, batch 128."""
    return _conv(
        "Conv_Cifar10_32x64x64_layernorm",
        "cifar10",
        norm="layer_norm",
        data_dir=data_dir,
        seed=seed,
    )


def Conv_Cifar100_32x64x64(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    """Conv 32-64-64 with a 100-way head, batch 128.

    CIFAR-100 is not available offline, so the images come from the CIFAR-10
    subset (labels 0–9); the model, its 100 logits and the normaliser's
    ``1.5·ln 100`` cap are those of the original task.
    """
    return _conv("Conv_Cifar100_32x64x64", "cifar10", num_classes=100, data_dir=data_dir, seed=seed)


FACTORIES = {
    f.__name__: f
    for f in (
        Conv_Cifar10_32x64x64,
        Conv_Cifar10_16_32x64x64,
        Conv_Cifar10_32x64x64_Tanh,
        Conv_Cifar10_32x64x64_batchnorm,
        Conv_Cifar10_32x64x64_layernorm,
        Conv_Cifar100_32x64x64,
    )
}
