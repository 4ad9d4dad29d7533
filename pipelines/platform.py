"""Where the stages run on a cluster: the one helper for resources, node pools and secrets.

Every task of every pipeline goes through :func:`configure`. It sets CPU and
memory requests, and for accelerator stages the accelerator type and count,
the node selector and the toleration of the GPU or TPU node pool
(``kfp-kubernetes``). Secrets are mounted from Kubernetes objects, never
written into the YAML: the Hugging Face token as ``HF_TOKEN`` (publish and
re-evaluation only), GCS credentials as a file that
``GOOGLE_APPLICATION_CREDENTIALS`` points to, and the MLflow tracking URI from
a ConfigMap. The names below are shared with ``manifests/``.

``kfp.local`` ignores all of this (platform settings are for a cluster), so
the same compiled YAML also runs on a laptop.
"""

from __future__ import annotations

import dataclasses

from kfp import kubernetes

HF_SECRET = "celo-hf-token"
HF_SECRET_KEYS = {"token": "HF_TOKEN"}
GCS_SECRET = "celo-gcs-credentials"
GCS_MOUNT = "/var/secrets/gcs"
CONFIG_MAP = "celo-config"
CONFIG_MAP_KEYS = {
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "google_application_credentials": "GOOGLE_APPLICATION_CREDENTIALS",
}


@dataclasses.dataclass(frozen=True)
class NodePool:
    """Requests and placement of one kind of stage on one target."""

    cpu: str
    memory: str
    accelerator: str | None = None
    accelerator_count: int = 0
    node_selector: tuple[tuple[str, str], ...] = ()
    toleration: str | None = None  # taint key, tolerated with NoSchedule/Exists


GPU_POOL = NodePool(
    "8",
    "32G",
    "nvidia.com/gpu",
    1,
    (("cloud.google.com/gke-accelerator", "nvidia-l4"),),
    "nvidia.com/gpu",
)
TPU_POOL = NodePool(
    "8",
    "32G",
    "google.com/tpu",
    4,
    (
        ("cloud.google.com/gke-tpu-accelerator", "tpu-v5-lite-podslice"),
        ("cloud.google.com/gke-tpu-topology", "2x2"),
    ),
    "google.com/tpu",
)
CPU_HEAVY = NodePool("4", "16G")
CPU_LIGHT = NodePool("1", "2G")

#: (target, role) → pool. "compute" stages train or evaluate; "light" ones publish or collect.
POOLS: dict[tuple[str, str], NodePool] = {
    ("cpu", "compute"): CPU_HEAVY,
    ("gpu", "compute"): GPU_POOL,
    ("tpu", "compute"): TPU_POOL,
    **{(t, "light"): CPU_LIGHT for t in ("cpu", "gpu", "tpu")},
}


def configure(task, target: str, role: str = "compute", hf_token: bool = False):
    """Place ``task`` for ``target`` (``cpu``, ``gpu``, ``tpu``) and mount its secrets.

    Args:
      task: a ``PipelineTask``.
      target: the compile target.
      role: ``compute`` (accelerator on gpu/tpu) or ``light`` (always CPU).
      hf_token: mount the Hugging Face token as ``HF_TOKEN``.

    Returns:
      The task, for chaining.
    """
    pool = POOLS[(target, role)]
    task.set_cpu_request(pool.cpu).set_memory_request(pool.memory)
    if pool.accelerator:
        task.set_accelerator_type(pool.accelerator).set_accelerator_limit(pool.accelerator_count)
    for label, value in pool.node_selector:
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    if pool.toleration:
        kubernetes.add_toleration(task, key=pool.toleration, operator="Exists", effect="NoSchedule")
    kubernetes.use_config_map_as_env(
        task, config_map_name=CONFIG_MAP, config_map_key_to_env=CONFIG_MAP_KEYS, optional=True
    )
    kubernetes.use_secret_as_volume(
        task, secret_name=GCS_SECRET, mount_path=GCS_MOUNT, optional=True
    )
    if hf_token:
        kubernetes.use_secret_as_env(task, secret_name=HF_SECRET, secret_key_to_env=HF_SECRET_KEYS)
    return task
