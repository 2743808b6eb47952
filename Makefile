# Two commands for a newcomer: `make demo` (the main job) and `make test`.
# Each creates .venv from pyproject.toml when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Weights and ontologies come from installed packages; never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/train.py

test: lint
	$(PY) -m pytest

# ruff (lint, import order) and the layering contracts of pyproject.toml ([tool.importlinter])
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) outputs multirun .cache

# ---- The real deployment on Flower (README: "Deploying on separate machines") -------------
# Each target is a thin wrapper; pass Hydra overrides in ARGS, e.g.
#   make certificates HOST=coordinator.example.org SITES="cleveland hungary switzerland va"
#   make coordinator ARGS="experiment=heart_flamby seeds=null"
#   make site SITE=cleveland SUPERLINK=coordinator.example.org:9092 DATA=/data/processed.cleveland.data
#   make loopback ARGS="experiment=heart_flamby seeds=null data.root=$$PWD/../shared/data/heart"
.PHONY: certificates coordinator site loopback test-flower bench-flower
CERTS ?= outputs/certificates
HOST ?= 127.0.0.1
SUPERLINK ?= 127.0.0.1:9092

certificates:
	bash scripts/make_certificates.sh $(CERTS) $(HOST) $(SITES)

coordinator: $(STAMP)
	$(PY) scripts/flower_coordinator.py deploy.certificates=$(CERTS) $(ARGS)

site: $(STAMP)
	$(PY) scripts/flower_site.py deploy.site=$(SITE) deploy.superlink=$(SUPERLINK) deploy.certificates=$(CERTS) $(if $(DATA),deploy.data_path=$(DATA)) $(ARGS)

loopback: $(STAMP)
	$(PY) scripts/flower_loopback.py $(ARGS)

test-flower: $(STAMP)
	$(PY) -m pytest tests/deployment/test_flower.py
	$(PY) -m pytest -m slow tests/deployment/test_flower.py tests/deployment/test_flower_deployment.py

bench-flower: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,simulation]'
	$(PY) benchmarks/flower_rounds.py
