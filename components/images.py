"""The container images of the pipeline stages: the one place a release pins them.

Tags follow the package version, so a compiled pipeline names the images of
the code it embeds. ``cpu`` runs every stage on CPU nodes (and is the image
``kfp.local`` stands in for); ``gpu`` (jax with CUDA 12) and ``tpu``
(jax[tpu]) run the training and evaluation stages on accelerator node pools.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from kfp import dsl

REGISTRY = "ghcr.io/celo-ml"
try:
    VERSION = version("celo")
except PackageNotFoundError:  # a source tree that is not installed
    VERSION = "0.0.0"

IMAGES: dict[str, str] = {
    "cpu": f"{REGISTRY}/celo-cpu:{VERSION}",
    "gpu": f"{REGISTRY}/celo-cuda:{VERSION}",
    "tpu": f"{REGISTRY}/celo-tpu:{VERSION}",
}
#: The image every component is declared with; targets swap it with :func:`for_target`.
CPU = IMAGES["cpu"]
TARGETS = tuple(IMAGES)


def image(target: str) -> str:
    """The stage image for ``target`` (``cpu``, ``gpu`` or ``tpu``)."""
    if target not in IMAGES:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return IMAGES[target]


def for_target(component, target: str):
    """The same component on the image of ``target`` (kfp offers no per-task image)."""
    if target == "cpu":
        return component
    return dsl.component(component.python_func, base_image=image(target), install_kfp_package=False)
