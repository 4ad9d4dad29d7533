#!/usr/bin/env bash
# Build the release images, tagged with the package version, and record their digests.
#
#   images/build.sh [cpu] [cuda] [tpu] [mlflow]        (default: all four)
#
# Images: $REGISTRY/celo-{cpu,cuda,tpu}:$TAG (stages) and $REGISTRY/celo-mlflow:$TAG.
# Environment:
#   REGISTRY     image name prefix (default ghcr.io/celo-ml; the same
#                default as components/images.py)
#   TAG          image tag (default: the version in pyproject.toml; keep it so)
#   BASE_IMAGE   base image with CPython 3.11, venv and pip (default python:3.11-slim-bookworm)
#   BUILDER      buildah (default), podman or docker
#   GLOBAL_FLAGS flags before the builder's subcommand, e.g. "--storage-driver vfs"
#   BUILD_FLAGS  extra flags for "$BUILDER build", e.g. "--isolation chroot -v
#                /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
#   PUSH=1       push each image and record the registry's digest in images/digests.json
#                (the release record components/images.py may pin); without it the local
#                image digests go to build/images/digests.json only.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
TAG=${TAG:-$VERSION}
REGISTRY=${REGISTRY:-ghcr.io/celo-ml}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
BUILDER=${BUILDER:-buildah}
BUILD_FLAGS=${BUILD_FLAGS:-}
GLOBAL_FLAGS=${GLOBAL_FLAGS:-}
PUSH=${PUSH:-0}
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(cpu cuda tpu mlflow)

mkdir -p dist build/images
rm -f "dist/celo-${VERSION}-py3-none-any.whl"
"$PY" -m pip wheel --no-deps -q -w dist .
WHEEL="dist/celo-${VERSION}-py3-none-any.whl"
[ -f "$WHEEL" ] || { echo "no wheel at $WHEEL" >&2; exit 1; }

digest_of() {  # local image digest, or the pushed one
  case "$BUILDER" in
    # shellcheck disable=SC2086
    buildah) buildah $GLOBAL_FLAGS inspect --type image --format '{{.FromImageDigest}}' "$1" ;;
    # shellcheck disable=SC2086
    podman) podman $GLOBAL_FLAGS image inspect --format '{{.Digest}}' "$1" ;;
    docker) docker image inspect --format '{{.Id}}' "$1" ;;
  esac
}

RECORD=build/images/digests.tsv
: > "$RECORD"
for v in "${VARIANTS[@]}"; do
  ctx="build/images/$v"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "images/requirements-$v.txt" "$ctx/requirements.txt"
  image="$REGISTRY/celo-$v:$TAG"
  case "$v" in
    cpu) file=images/Containerfile; platforms=cpu ;;
    cuda) file=images/Containerfile; platforms=cuda,cpu ;;
    tpu) file=images/Containerfile; platforms=tpu,cpu ;;
    mlflow) file=images/Containerfile.mlflow; platforms= ;;
    *) echo "unknown image $v (cpu, cuda, tpu, mlflow)" >&2; exit 2 ;;
  esac
  if [ "$v" != mlflow ]; then
    cp "$WHEEL" "$ctx/"
    mkdir -p "$ctx/pipelines" && cp pipelines/*.yaml "$ctx/pipelines/"
  fi
  echo "== building $image from $BASE_IMAGE"
  # shellcheck disable=SC2086
  "$BUILDER" $GLOBAL_FLAGS build $BUILD_FLAGS -f "$file" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VARIANT="$v" \
    --build-arg JAX_PLATFORMS="$platforms" --build-arg CELO_VERSION="$VERSION" \
    -t "$image" "$ctx"
  if [ "$PUSH" = 1 ]; then
    # shellcheck disable=SC2086
    "$BUILDER" $GLOBAL_FLAGS push --digestfile "$ctx/digest" "$image"
    digest=$(cat "$ctx/digest")
  else
    digest=$(digest_of "$image")
  fi
  printf '%s\t%s\t%s\n' "$v" "$image" "$digest" >> "$RECORD"
  echo "== $image $digest"
done

OUT=build/images/digests.json
[ "$PUSH" = 1 ] && OUT=images/digests.json
"$PY" - "$RECORD" "$OUT" "$REGISTRY" "$TAG" "$PUSH" <<'EOF'
import json, os, sys
record, out, registry, tag, pushed = sys.argv[1:]
doc = {"registry": registry, "tag": tag, "pushed": pushed == "1", "images": {}}
if os.path.exists(out):
    old = json.load(open(out))
    if old.get("tag") == tag and old.get("registry") == registry:
        doc["images"] = old.get("images", {})
for line in open(record):
    variant, image, digest = line.rstrip("\n").split("\t")
    doc["images"][variant] = f"{image}@{digest}" if digest else image
with open(out, "w") as f:
    json.dump(doc, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"digests recorded in {out}")
EOF
