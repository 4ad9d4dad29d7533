"""MLP autoencoders (learned_optimization ``tasks/fixed/image_mlp_ae.py``, Appendix A.3).

Flatten the image to F values, ``hk.nets.MLP(hidden + [F])`` with ReLU between
layers, and score ``mean_batch(mean_F((x − sigmoid(logits))²))``. Parameters
``mlp/~/linear_{i}``; the normaliser clips the loss to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from celo.tasks import layers
from celo.tasks.base import Task
from celo.tasks.image_mlp import _input_size
from celo.tasks.sources import image_source


class _MLPAutoencoderTask(Task):
    """Fully connected autoencoder with a sigmoid output and a mean-squared-error loss."""

    def __init__(
        self,
        datasets,
        hidden_units: Sequence[int],
        activation: Callable[[jnp.ndarray], jnp.ndarray] = jax.nn.relu,
        *,
        name: str | None = None,
    ):
        self.datasets = datasets
        self.hidden_units = tuple(hidden_units)
        self.activation = activation
        self._name = name

    def init(self, key: jax.Array) -> dict:
        # The reference pulls one training batch here for its shape; the
        # abstract batch gives the same shapes without consuming data.
        features = _input_size(self)
        return layers.mlp_init(layers.KeySeq(key), features, [*self.hidden_units, features])

    def loss(self, params: dict, key: jax.Array, data: dict) -> jnp.ndarray:
        del key
        image = data["image"]
        x = jnp.reshape(image, (image.shape[0], -1))
        logits = layers.mlp(params, x, len(self.hidden_units) + 1, self.activation)
        return jnp.mean(jnp.mean(jnp.square(x - jax.nn.sigmoid(logits)), axis=1))

    def normalizer(self, loss: jnp.ndarray) -> jnp.ndarray:
        return jnp.clip(loss, 0.0, 1.0)


def _factory(name: str, dataset: str, hidden: Sequence[int], batch_size: int):
    def factory(*, data_dir: str | Path | None = None, seed: int = 0) -> Task:
        data = image_source(dataset, batch_size, data_dir=data_dir, seed=seed)
        return _MLPAutoencoderTask(data, hidden, name=name)

    factory.__name__ = factory.__qualname__ = name
    widths = "-".join(str(h) for h in hidden)
    factory.__doc__ = (
        f"MLP autoencoder {widths} (ReLU, sigmoid output, MSE) on {dataset}, batch {batch_size}."
    )
    return factory


ImageMLPAE_Mnist_128x32x128_bs128 = _factory(
    "ImageMLPAE_Mnist_128x32x128_bs128", "mnist", (128, 32, 128), 128
)
ImageMLPAE_FashionMnist_128x32x128_bs128 = _factory(
    "ImageMLPAE_FashionMnist_128x32x128_bs128", "fashion_mnist", (128, 32, 128), 128
)
ImageMLPAE_Cifar10_32x32x32_bs128 = _factory(
    "ImageMLPAE_Cifar10_32x32x32_bs128", "cifar10", (32, 32, 32), 128
)
ImageMLPAE_Cifar10_128x32x128_bs256 = _factory(
    "ImageMLPAE_Cifar10_128x32x128_bs256", "cifar10", (128, 32, 128), 256
)
ImageMLPAE_Cifar10_256x256x256_bs128 = _factory(
    "ImageMLPAE_Cifar10_256x256x256_bs128", "cifar10", (256, 256, 256), 128
)

FACTORIES = {
    f.__name__: f
    for f in (
        ImageMLPAE_Mnist_128x32x128_bs128,
        ImageMLPAE_FashionMnist_128x32x128_bs128,
        ImageMLPAE_Cifar10_32x32x32_bs128,
        ImageMLPAE_Cifar10_128x32x128_bs256,
        ImageMLPAE_Cifar10_256x256x256_bs128,
    )
}
