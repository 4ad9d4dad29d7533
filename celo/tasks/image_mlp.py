"""Image-classification MLPs (learned_optimization ``tasks/fixed/image_mlp.py``).

``_MLPImageTask`` flattens the image and applies ``hk.nets.MLP(hidden + [C])``
(params ``mlp/~/linear_{i}``); ``_MLPImageTaskNorm`` interleaves
``linear`` → LayerNorm/BatchNorm → activation (params ``linear``,
``layer_norm``, ``linear_1`` …, Appendix A.2). Both use the mean softmax
cross-entropy and the clipped classification normaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from celo.tasks import layers
from celo.tasks.base import (
    Task,
    classification_normalizer,
    ones_like_batch,
    softmax_cross_entropy,
)
from celo.tasks.sources import image_source

Activation = Callable[[jnp.ndarray], jnp.ndarray]


def _num_classes(task: Task, num_classes: int | None) -> int:
    return int(num_classes) if num_classes is not None else task.datasets.extra_info["num_classes"]


def _input_size(task: Task) -> int:
    return int(np.prod(task.abstract_batch["image"].shape[1:]))


class _MLPImageTask(Task):
    """Flatten → MLP(hidden_sizes + [num_classes]) → softmax cross-entropy.

    Args:
      datasets: a ``Datasets`` or a :class:`~celo.tasks.base.DataSpec`.
      hidden_sizes: widths of the hidden layers.
      act_fn: activation between layers.
      dropout_rate: dropout before each hidden activation (as ``hk.nets.MLP``).
      num_classes: classes of the output layer; read from the data if None.
      name: task name (the registry name of the factory that built it).
    """

    def __init__(
        self,
        datasets,
        hidden_sizes: Sequence[int],
        act_fn: Activation = jax.nn.relu,
        dropout_rate: float = 0.0,
        *,
        num_classes: int | None = None,
        name: str | None = None,
    ):
        self.datasets = datasets
        self.num_classes = _num_classes(self, num_classes)
        self.sizes = [*hidden_sizes, self.num_classes]
        self.act_fn = act_fn
        self.dropout_rate = float(dropout_rate)
        self._name = name

    def init(self, key: jax.Array) -> dict:
        keys = layers.KeySeq(key)
        next(keys)  # the reference draws the MLP's dropout key before creating its layers
        return layers.mlp_init(keys, _input_size(self), self.sizes)

    def logits(self, params: dict, key: jax.Array, image: jnp.ndarray) -> jnp.ndarray:
        """Class logits of a batch of images."""
        x = jnp.reshape(image, (image.shape[0], -1))
        if self.dropout_rate == 0.0:
            return layers.mlp(params, x, len(self.sizes), self.act_fn)
        rngs = jax.random.split(next(layers.KeySeq(key)), len(self.sizes) + 1)[1:]
        for i in range(len(self.sizes)):
            x = layers.linear(params[f"mlp/~/linear_{i}"], x)
            if i < len(self.sizes) - 1:
                x = self.act_fn(layers.dropout(rngs[i], self.dropout_rate, x))
        return x

    def loss(self, params: dict, key: jax.Array, data: dict) -> jnp.ndarray:
        logits = self.logits(params, key, data["image"])
        labels = jax.nn.one_hot(data["label"], self.num_classes)
        return jnp.mean(softmax_cross_entropy(logits=logits, labels=labels))

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        return classification_normalizer(loss, self.num_classes)


class _MLPImageTaskNorm(Task):
    """MLP with LayerNorm (axis 1) or BatchNorm (train mode) before each activation."""

    def __init__(
        self,
        datasets,
        hidden_sizes: Sequence[int],
        norm_type: str,
        act_fn: Activation = jax.nn.relu,
        *,
        num_classes: int | None = None,
        name: str | None = None,
    ):
        if norm_type not in ("layer_norm", "batch_norm"):
            raise ValueError(f"norm_type must be 'layer_norm' or 'batch_norm', not {norm_type!r}")
        self.datasets = datasets
        self.num_classes = _num_classes(self, num_classes)
        self.sizes = [*hidden_sizes, self.num_classes]
        self.norm_type = norm_type
        self.act_fn = act_fn
        self._name = name

    def _suffix(self, i: int) -> str:
        return "" if i == 0 else f"_{i}"

    def init_with_state(self, key: jax.Array) -> tuple[dict, dict]:
        keys = layers.KeySeq(key)
        params, state, n_in = {}, {}, _input_size(self)
        for i, n_out in enumerate(self.sizes):
            params[f"linear{self._suffix(i)}"] = layers.linear_init(keys, n_in, n_out)
            if i < len(self.sizes) - 1:
                norm = f"{self.norm_type}{self._suffix(i)}"
                if self.norm_type == "layer_norm":
                    params[norm] = layers.layer_norm_init(n_out)
                else:
                    params[norm], ema = layers.batch_norm_init((1, n_out))
                    state[f"{norm}/~/mean_ema"] = ema["mean_ema"]
                    state[f"{norm}/~/var_ema"] = ema["var_ema"]
            n_in = n_out
        if state:
            # haiku's init runs the model once, so the moving averages start advanced.
            batch = ones_like_batch(self.abstract_batch)
            _, state = self._apply(params, state, batch["image"])
        return params, state

    def _apply(self, params: dict, state: dict | None, image: jnp.ndarray):
        x = jnp.reshape(image, (image.shape[0], -1))
        new_state = {}
        for i in range(len(self.sizes)):
            x = layers.linear(params[f"linear{self._suffix(i)}"], x)
            if i == len(self.sizes) - 1:
                break
            norm = f"{self.norm_type}{self._suffix(i)}"
            if self.norm_type == "layer_norm":
                x = layers.layer_norm(params[norm], x, axis=1)
            else:
                ema = layers.batch_norm_ema(state, norm, (1, x.shape[-1]))
                x, ema = layers.batch_norm_train(params[norm], ema, x)
                new_state[f"{norm}/~/mean_ema"] = ema["mean_ema"]
                new_state[f"{norm}/~/var_ema"] = ema["var_ema"]
            x = self.act_fn(x)
        return x, new_state

    def loss_with_state_and_aux(self, params, state, key, data):
        del key
        logits, state = self._apply(params, state, data["image"])
        labels = jax.nn.one_hot(data["label"], self.num_classes)
        return jnp.mean(softmax_cross_entropy(logits=logits, labels=labels)), state, {}

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        return classification_normalizer(loss, self.num_classes)


# -- registry entries (names as in learned_optimization) --------------------------------------
def _mlp(dataset, bs, hidden, act=jax.nn.relu, size=None, name=None, **kw):
    data = image_source(dataset, bs, size, data_dir=kw.get("data_dir"), seed=kw.get("seed", 0))
    classes = 100 if dataset == "cifar100" else 10
    return _MLPImageTask(data, hidden, act, num_classes=classes, name=name)


def _mlp_norm(dataset, bs, hidden, norm, act=jax.nn.relu, name=None, **kw):
    data = image_source(dataset, bs, data_dir=kw.get("data_dir"), seed=kw.get("seed", 0))
    return _MLPImageTaskNorm(data, hidden, norm, act, num_classes=10, name=name)


def ImageMLP_FashionMnist_Relu128x128(*, data_dir: str | Path | None = None, seed: int = 0):
    """784-128-128-10 ReLU MLP on 28×28 Fashion-MNIST, batch 128."""
    return _mlp(
        "fashion_mnist",
        128,
        [128, 128],
        name="ImageMLP_FashionMnist_Relu128x128",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_FashionMnist8_Relu32(*, data_dir: str | Path | None = None, seed: int = 0):
    """64-32-10 ReLU MLP on 8×8 Fashion-MNIST, batch 128 (the LOpt task's inner problem)."""
    return _mlp(
        "fashion_mnist",
        128,
        [32],
        size=(8, 8),
        name="ImageMLP_FashionMnist8_Relu32",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Mnist_128x128x128_Relu(*, data_dir: str | Path | None = None, seed: int = 0):
    """3×128 ReLU MLP on MNIST, batch 128."""
    return _mlp(
        "mnist",
        128,
        [128] * 3,
        name="ImageMLP_Mnist_128x128x128_Relu",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Cifar10_128x128x128_Relu(*, data_dir: str | Path | None = None, seed: int = 0):
    """3×128 ReLU MLP on CIFAR-10, batch 128."""
    return _mlp(
        "cifar10",
        128,
        [128] * 3,
        name="ImageMLP_Cifar10_128x128x128_Relu",
        data_dir=data_dir,
        seed=seed,
    )


def _tanh_factory(bs: int):
    name = f"ImageMLP_Cifar10_128x128x128_Tanh_bs{bs}"

    def factory(*, data_dir: str | Path | None = None, seed: int = 0):
        return _mlp("cifar10", bs, [128] * 3, jnp.tanh, name=name, data_dir=data_dir, seed=seed)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"3×128 tanh MLP on CIFAR-10, batch {bs}."
    return factory


ImageMLP_Cifar10_128x128x128_Tanh_bs64 = _tanh_factory(64)
ImageMLP_Cifar10_128x128x128_Tanh_bs128 = _tanh_factory(128)
ImageMLP_Cifar10_128x128x128_Tanh_bs256 = _tanh_factory(256)


def ImageMLP_Cifar10_128x128x128_LayerNorm_Relu(
    *, data_dir: str | Path | None = None, seed: int = 0
):
    """3×128 MLP, Linear → LayerNorm → ReLU, on CIFAR-10, batch 128 (Appendix A.2)."""
    return _mlp_norm(
        "cifar10",
        128,
        [128] * 3,
        "layer_norm",
        name="ImageMLP_Cifar10_128x128x128_LayerNorm_Relu",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Cifar10_128x128x128_LayerNorm_Tanh(
    *, data_dir: str | Path | None = None, seed: int = 0
):
    """3×128 MLP, Linear → LayerNorm → tanh, on CIFAR-10, batch 128."""
    return _mlp_norm(
        "cifar10",
        128,
        [128] * 3,
        "layer_norm",
        jnp.tanh,
        name="ImageMLP_Cifar10_128x128x128_LayerNorm_Tanh",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Cifar10_128x128x128_BatchNorm_Relu(
    *, data_dir: str | Path | None = None, seed: int = 0
):
    """3×128 MLP, Linear → BatchNorm (train mode) → ReLU, on CIFAR-10, batch 128."""
    return _mlp_norm(
        "cifar10",
        128,
        [128] * 3,
        "batch_norm",
        name="ImageMLP_Cifar10_128x128x128_BatchNorm_Relu",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Cifar10_128x128x128_BatchNorm_Tanh(
    *, data_dir: str | Path | None = None, seed: int = 0
):
    """3×128 MLP, Linear → BatchNorm (train mode) → tanh, on CIFAR-10, batch 128."""
    return _mlp_norm(
        "cifar10",
        128,
        [128] * 3,
        "batch_norm",
        jnp.tanh,
        name="ImageMLP_Cifar10_128x128x128_BatchNorm_Tanh",
        data_dir=data_dir,
        seed=seed,
    )


def ImageMLP_Cifar10BW8_Relu32(*, data_dir: str | Path | None = None, seed: int = 0):
    """64-32-10 ReLU MLP on 8×8 grayscale CIFAR-10, batch 128."""
    data = image_source("cifar10", 128, (8, 8), grayscale=True, data_dir=data_dir, seed=seed)
    return _MLPImageTask(data, [32], num_classes=10, name="ImageMLP_Cifar10BW8_Relu32")


FACTORIES = {
    f.__name__: f
    for f in (
        ImageMLP_FashionMnist_Relu128x128,
        ImageMLP_FashionMnist8_Relu32,
        ImageMLP_Mnist_128x128x128_Relu,
        ImageMLP_Cifar10_128x128x128_Relu,
        ImageMLP_Cifar10_128x128x128_Tanh_bs64,
        ImageMLP_Cifar10_128x128x128_Tanh_bs128,
        ImageMLP_Cifar10_128x128x128_Tanh_bs256,
        ImageMLP_Cifar10_128x128x128_LayerNorm_Relu,
        ImageMLP_Cifar10_128x128x128_LayerNorm_Tanh,
        ImageMLP_Cifar10_128x128x128_BatchNorm_Relu,
        ImageMLP_Cifar10_128x128x128_BatchNorm_Tanh,
        ImageMLP_Cifar10BW8_Relu32,
    )
}
