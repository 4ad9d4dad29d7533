#!/usr/bin/env bash
# Prove the CPU stage image on a machine with no Docker daemon and no container registry:
#   1. debootstrap a minimal Debian bookworm with Python 3.11 and import it as the base image;
#   2. build localhost/celo-cpu:<version> from it with images/build.sh (buildah, chroot isolation);
#   3. inside the image (buildah run --isolation chroot): `celo --help` and a 3-step smoke train.
# `podman run` cannot start containers here (no CAP_SYS_RESOURCE for rlimits); `buildah run
# --isolation chroot` can. Needs root, debootstrap, buildah and podman (apt-get install -y
# podman buildah debootstrap), network access to Debian and PyPI, and a few GB of disk.
#
#   images/build_and_smoke.sh 2>&1 | tee build/images/smoke.log
#
# Environment: WORK (rootfs and scratch, default /var/tmp/celo-images), CELO_DATA_DIR (data
# root mounted read-only into the container, default ../shared/datasets), KEEP=1 keeps the
# working container.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILDAH_ISOLATION=chroot
# vfs: overlay mounts are not allowed here. A function, so every call uses the same store.
buildah() { command buildah --storage-driver vfs "$@"; }
WORK=${WORK:-/var/tmp/celo-images}
DATA=${CELO_DATA_DIR:-$(cd .. && pwd)/shared/datasets}
BASE=localhost/debian-py:bookworm
CA=/etc/ssl/certs/ca-certificates.crt
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=localhost/celo-cpu:$VERSION
step() { echo; echo "== $(date +%H:%M:%S) $*"; }

step "base image $BASE"
if buildah inspect --type image "$BASE" > /dev/null 2>&1; then
  echo "present"
else
  mkdir -p "$WORK"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log"
  tar -C "$WORK/rootfs" -c . | podman --storage-driver vfs import - "$BASE"
  rm -rf "$WORK/rootfs"
fi
base_ctr=$(buildah from "$BASE")
buildah run --isolation chroot "$base_ctr" -- python3 --version
buildah rm "$base_ctr" > /dev/null

step "build $IMAGE"
# The host CA bundle is mounted over the image's for the build only (a proxy re-signs TLS here).
t0=$(date +%s)
REGISTRY=localhost BASE_IMAGE=$BASE BUILDER=buildah GLOBAL_FLAGS="--storage-driver vfs" \
  BUILD_FLAGS="--isolation chroot --layers -v $CA:$CA:ro" images/build.sh cpu
echo "build took $(( $(date +%s) - t0 )) s"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}} {{.Digest}}' | grep -E "celo-cpu|debian-py"
cat build/images/digests.json

step "run celo --help inside $IMAGE"
ctr=$(buildah from "$IMAGE")
cleanup() { [ "${KEEP:-0}" = 1 ] || buildah rm "$ctr" > /dev/null; }
trap cleanup EXIT
buildah run --isolation chroot "$ctr" -- celo --help
buildah run --isolation chroot "$ctr" -- python -c \
  'import importlib.metadata as m, jax; print("celo", m.version("celo"), "jax", jax.__version__, jax.devices())'

step "3-step smoke train inside $IMAGE (data mounted read-only from $DATA)"
t0=$(date +%s)
buildah run --isolation chroot -v "$DATA:/data:ro" -e CELO_DATA_DIR=/data "$ctr" -- \
  celo train --preset smoke --outer_iterations 3 --experiment_root /tmp/smoke --exp_id smoke
buildah run --isolation chroot "$ctr" -- sh -c 'ls -l /tmp/smoke/train/smoke'
echo "smoke train took $(( $(date +%s) - t0 )) s"
step "done"
