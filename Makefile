# Developer commands. `make demo` and `make test` work on a fresh machine:
# they create .venv and install the package with every extra on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CELO_DATA_DIR ?= $(abspath ../shared/datasets)
export JAX_PLATFORMS ?= cpu

.PHONY: venv test test-all demo demo-fmnist bench lint format pipelines clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

# The whole pipeline DAG at smoke scale on this machine (kfp.local + MLflow sqlite store).
demo: $(STAMP)
	$(VENV)/bin/celo pipeline run --local --preset smoke

# Released Celo against Adam on Fashion-MNIST (the earlier demo).
demo-fmnist: $(STAMP)
	$(PY) -m celo.demo

# Recompile pipelines/*.yaml from their sources (a test fails when they drift).
pipelines: $(STAMP)
	$(PY) -m pipelines.compile

bench: $(STAMP)
	$(PY) bench/step_cost.py

lint: $(STAMP)
	$(VENV)/bin/ruff check celo tests bench components pipelines
	$(VENV)/bin/ruff format --check celo tests bench components pipelines

format: $(STAMP)
	$(VENV)/bin/ruff format celo tests bench components pipelines
	$(VENV)/bin/ruff check --fix celo tests bench components pipelines

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Release images (images/README.md) and cluster manifests (manifests/README.md).
.PHONY: images images-lock images-smoke manifests
IMAGES ?= cpu cuda tpu mlflow

images: $(STAMP)
	PY=$(PY) images/build.sh $(IMAGES)

images-lock: $(STAMP)
	$(PY) -m pip wheel --no-deps -q -w dist .
	$(PY) images/lock.py

images-smoke: $(STAMP)
	mkdir -p build/images
	PY=$(PY) images/build_and_smoke.sh 2>&1 | tee build/images/smoke.log

manifests:
	for d in base reeval overlays/gke overlays/gke-keyfile overlays/cloudsql; do \
	  echo "--- manifests/$$d"; kubectl kustomize manifests/$$d || exit 1; done
