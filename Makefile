# spotq developer targets. Every target sets up what it needs: a fresh machine needs only python3, go and make.
#   make demo     the main job on the built-in local default (local control plane + moto), with a live view
#   make test     lint + the whole test suite (bash .ci/run runs exactly this)
#   make bench    the mass-interruption benchmark (all scales; bench/README.md), figures in bench/results/
#   make faults   the fault report (faults/README.md): each fault scenario on a fresh local environment
#   make testenv  build the local environment's binaries into $SPOTQ_CACHE (default ~/.cache/spotq); idempotent
# Each target builds only the tools it uses: demo and bench need the control plane and kwok, not helm, the IMDS
# mock or promtool (promtool alone is ~15 min cold), which only the tests use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv testenv testenv-cluster testenv-gomod test test-unit test-integration lint demo bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

testenv:
	bash testenv/build.sh

# The control plane (kube-apiserver, controller-manager, scheduler, kubectl), etcd and kwok only.
testenv-cluster:
	bash testenv/build.sh kubernetes etcd kwok

# Regenerate testenv/gomod/*/go.mod and go.sum after changing testenv/versions.env.
testenv-gomod:
	bash testenv/gen-gomod.sh

lint: venv
	$(VENV)/bin/ruff check spotq testenv tests bench faults
	$(VENV)/bin/ruff format --check spotq testenv tests bench faults
	$(VENV)/bin/mypy spotq testenv bench faults
	$(VENV)/bin/lint-imports

test: venv testenv lint
	$(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest tests/unit -q

test-integration: venv testenv
	$(PY) -m pytest tests/integration -m integration -q

demo: venv testenv-cluster
	$(PY) -m testenv.demo

$(VENV)/.bench-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: venv testenv-cluster $(VENV)/.bench-installed
	$(PY) -m bench.run --all

# The fault report: the control plane and kwok (as bench), ElasticMQ (Java + Maven, fetched once by bench/elasticmq).
# FAULTS_ARGS passes options, e.g. make faults FAULTS_ARGS="--scenario kill-restart --nodes 4".
.PHONY: faults
faults: venv testenv-cluster
	$(PY) -m faults.run $(FAULTS_ARGS)
