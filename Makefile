# Two commands do everything on a fresh machine:
#   make demo   create .venv if missing, install the runtime dependencies, train + evaluate the demo
#   make test   create .venv if missing, install runtime + test dependencies, lint, run the tests
# VENV=/some/dir uses another virtual environment (created if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per dependency set, so that a venv made by `make demo` gets the test extra on
# `make test`, and either set is reinstalled when requirements.txt or pyproject.toml change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=

.PHONY: test lint demo bench env clean

env: $(RUNTIME_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Runtime: pinned versions from requirements.txt, then the package itself (editable, no deps:
# they are the pins just installed).
$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

# Tests: the `test` extra of pyproject.toml (pytest, notebook runner, MedPy, torch, shellcheck,
# ruff) on top of the runtime set.
$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install -e '.[test]'
	touch $@

lint: $(TEST_STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

demo: $(RUNTIME_STAMP)
	$(PY) -m sgdc_jax.demo

bench: $(RUNTIME_STAMP)
	$(PY) benchmarks/bench_sgdc.py

clean:
	rm -rf runs .pytest_cache
