"""The release images: pinned locks agree with pyproject, tags follow the package version.

The image build itself is the ``slow`` test at the bottom (buildah on a
debootstrapped Debian base, then ``celo --help`` and a smoke train inside).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
VARIANTS = ("cpu", "cuda", "tpu", "mlflow")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock(variant: str) -> dict[str, str]:
    pins = {}
    for line in (IMAGES / f"requirements-{variant}.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        assert m, f"requirements-{variant}.txt: not an exact pin: {line!r}"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _pins(reqs: list[str]) -> dict[str, str]:
    out = {}
    for r in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([\w.]+)", r)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


@pytest.mark.parametrize("variant", ["cpu", "cuda", "tpu"])
def test_stage_locks_hold_the_package_pins(variant):
    lock = _lock(variant)
    project = _project()
    pinned = _pins(project["dependencies"])
    for extra in ("hub", "eval", "tracking", "gcs"):
        pinned.update(_pins(project["optional-dependencies"][extra]))
    pinned["kfp"] = _pins(project["optional-dependencies"]["pipeline"])["kfp"]
    for name, version in pinned.items():
        assert lock.get(name) == version, f"{variant}: {name} {lock.get(name)} != {version}"
    assert "celo" not in lock  # the wheel is installed on top, without dependency resolution
    assert "mlflow" not in lock, "stage images carry mlflow-skinny only"
    accel = {"cpu": set(), "cuda": {"jax-cuda12-plugin", "jax-cuda12-pjrt"}, "tpu": {"libtpu"}}
    assert accel[variant] <= set(lock), variant
    others = {"jax-cuda12-plugin", "libtpu"} - accel[variant]
    assert not others & set(lock), f"{variant} holds another accelerator's runtime"


def test_mlflow_server_matches_the_stage_client():
    skinny = _pins(_project()["optional-dependencies"]["tracking"])["mlflow-skinny"]
    server = _lock("mlflow")
    assert server["mlflow"] == server["mlflow-skinny"] == skinny
    assert all(_lock(v)["mlflow-skinny"] == skinny for v in ("cpu", "cuda", "tpu"))
    assert "google-cloud-storage" in server  # --artifacts-destination gs://


def test_containerfiles_take_the_base_as_a_build_arg():
    for name in ("Containerfile", "Containerfile.mlflow"):
        text = (IMAGES / name).read_text()
        arg = text.index("ARG BASE_IMAGE=")
        assert text.index("FROM ${BASE_IMAGE}") > arg, name
        assert "--no-deps -r" in text and "pip check" in text, name


def test_tags_follow_the_package_version():
    kfp = pytest.importorskip("kfp")  # noqa: F841
    from components import images

    version = _project()["version"]
    assert images.VERSION == version, "reinstall the package: its metadata is stale"
    build = (IMAGES / "build.sh").read_text()
    registry = re.search(r"REGISTRY=\$\{REGISTRY:-([^}]+)\}", build).group(1)
    assert registry == images.REGISTRY
    names = {"cpu": "celo-cpu", "gpu": "celo-cuda", "tpu": "celo-tpu"}
    for target, image in images.IMAGES.items():
        assert image == f"{registry}/{names[target]}:{version}"
    assert "TAG=${TAG:-$VERSION}" in build


def test_build_script_parses():
    for script in ("build.sh", "build_and_smoke.sh"):
        subprocess.run(["bash", "-n", str(IMAGES / script)], check=True)


def _can_build() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("buildah", "podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y podman buildah debootstrap)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_can_build() is not None, reason=str(_can_build()))
def test_cpu_image_builds_and_runs_a_smoke_train(tmp_path):
    """Minutes and a few GB: debootstrap, buildah build, then celo inside the image."""
    log = tmp_path / "smoke.log"
    with open(log, "w") as f:
        proc = subprocess.run(
            [str(IMAGES / "build_and_smoke.sh")],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=3600,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert "usage: celo" in text  # celo --help inside the image
    assert '"theta_path": "/tmp/smoke/train/smoke/theta.state"' in text  # the smoke train
    assert "== " in text and "done" in text.splitlines()[-1]
