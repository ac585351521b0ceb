# iamdb developer entry points. `make test` and `make bench` work on a fresh machine:
# they create the virtual environment and install what is missing first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# mongosh from npm, for the tests that log in with real MongoDB clients (local prefix, not global)
MONGOSH_VERSION := 2.12.0
MONGOSH_STAMP   := build/node/.mongosh-$(MONGOSH_VERSION)
# Pyodide from npm: CPython 3.14 (WebAssembly, under Node.js) compiles the python3.14 layers' .pyc,
# which no interpreter here can; its CPython 3.13 proves that path in tests/integration/test_layer.py
PYODIDE_VERSION      := 314.0.7
PYODIDE_TEST_VERSION := 0.29.3
PYODIDE_STAMP        := build/node/.pyodide-$(PYODIDE_VERSION)-$(PYODIDE_TEST_VERSION)

.PHONY: setup test unit lint bench ca-bundle devstack layer demo validate clean mongosh pyodide

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,aio,sqlalchemy,pool]' --group dev
	touch $(STAMP)

$(MONGOSH_STAMP):
	npm install --prefix build/node --no-audit --no-fund --no-update-notifier --loglevel=error mongosh@$(MONGOSH_VERSION)
	touch $@

## mongosh: the MongoDB shell (pinned) in build/node, used by tests/integration/test_mongo_clients.py
mongosh: $(MONGOSH_STAMP)

$(PYODIDE_STAMP):
	npm install --prefix build/node --no-audit --no-fund --no-update-notifier --loglevel=error \
		pyodide@$(PYODIDE_VERSION) pyodide313@npm:pyodide@$(PYODIDE_TEST_VERSION)
	touch $@

## pyodide: Pyodide (pinned) in build/node, for the python3.14 layers' .pyc
pyodide: $(PYODIDE_STAMP)

## setup: system packages (PostgreSQL, MariaDB, compiler; needs root) and the venv
setup:
	bash .ci/system-packages
	$(MAKE) $(STAMP)

## test: lint, type-check, then the whole suite (unit + integration against devstack)
test: $(STAMP)
	@bash .ci/system-packages --check || $(MAKE) setup
	$(MAKE) mongosh pyodide
	$(PY) -m ruff check layer devstack tests bench scripts functions
	$(PY) -m ruff format --check layer devstack tests bench scripts functions
	$(PY) -m mypy
	$(PY) scripts/validate_template.py
	$(PY) -m pytest

## unit: the tests that need no devstack servers (iamdb's and devstack's own)
unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/devstack tests/bench -m "not integration"

lint: $(STAMP)
	$(PY) -m ruff check layer devstack tests bench scripts functions
	$(PY) -m ruff format --check layer devstack tests bench scripts functions
	$(PY) -m mypy

## bench: every benchmark, one table each
bench: $(STAMP)
	@bash .ci/system-packages --check || $(MAKE) setup
	$(PY) -m bench

## devstack: run the local AWS + databases in the foreground (Ctrl-C stops them)
devstack: $(STAMP)
	$(PY) -m devstack up

## layer: the Lambda layers, python3.11-3.14 x x86_64/arm64 (build/iamdb-python313-arm64.zip...),
##        each rebuilt only when changed
layer: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) pyodide; \
	else echo "layer: no npm: no Pyodide, so the python3.14 layers get no .pyc" >&2; fi
	$(MAKE) -C layer layer PYTHON=$(abspath $(PY)) OUT=$(abspath build)

## demo: devstack + layer + the five example functions invoked cold then warm, then a report
##       (RUNTIME=python3.13: under that Lambda runtime, with its layer)
demo: $(STAMP)
	@bash .ci/system-packages --check || $(MAKE) setup
	$(MAKE) layer
	$(PY) scripts/demo.py $(if $(RUNTIME),--runtime $(RUNTIME))

## validate: lint template.yaml (SAM resources included) and check samconfig.toml
validate: $(STAMP)
	$(PY) scripts/validate_template.py

## ca-bundle: refresh the vendored RDS CA bundle (needs npm and node)
ca-bundle:
	$(PYTHON) scripts/refresh_ca_bundle.py

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache build
