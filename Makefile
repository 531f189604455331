# Two commands do everything on a fresh machine:
#   make demo   create .venv if missing, install the runtime dependencies, train + evaluate the demo
#   make test   create .venv if missing, install runtime + test dependencies, lint, run the tests
# To try the Python API:
#   make notebook   install the `notebook` extra, run notebooks/quickstart.ipynb headless into
#                   runs/notebook/quickstart.ipynb (the source stays without outputs)
# and, for the supported range's other end (CI runs it after `make test`):
#   make test-newest   .venv-newest (Python 3.12) with the newest releases of
#                      requirements-newest.txt, the `newest` test subset, then `pip check`
#   make refresh-newest   rewrite requirements-newest.txt from the package index
# VENV=/some/dir uses another virtual environment (created if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per dependency set, so that a venv made by `make demo` gets the test extra on
# `make test`, and either set is reinstalled when requirements.txt or pyproject.toml change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PYTEST_ARGS ?=
# pytest-xdist workers (0 = one process). Two keep both cores of the CI machine busy: most
# tests are single-threaded compiles and subprocesses.
PYTEST_WORKERS ?= 2
XDIST = -n $(PYTEST_WORKERS) --dist worksteal

# The newest releases: a second venv, made with Python 3.12 (.ci/find-python312 finds one, or
# fails saying so; NEWEST_PYTHON=/path/to/python3.12 picks it).
NEWEST_VENV ?= .venv-newest
NEWEST_PY := $(NEWEST_VENV)/bin/python
NEWEST_STAMP := $(NEWEST_VENV)/.installed-newest

.PHONY: test lint demo notebook bench env clean test-newest refresh-newest device-wheels

env: $(RUNTIME_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Runtime: pinned versions from requirements.txt, then the package itself (editable, no deps:
# they are the pins just installed; quiet, so that no build-backend notice floods `make demo`).
$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Tests: the `test` extra of pyproject.toml (pytest, notebook runner, MedPy, torch, shellcheck,
# ruff) on top of the runtime set.
$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install -e '.[test]'
	touch $@

lint: $(TEST_STAMP)
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -ra $(XDIST) $(PYTEST_ARGS) tests

$(NEWEST_PY):
	python=$$(.ci/find-python312) && "$$python" -m venv $(NEWEST_VENV)
	$(NEWEST_PY) -m pip install --upgrade pip

# Exact versions, transitive ones included, and pytest + pytest-xdist: all the subset needs
# (no torch, MedPy or MONAI: the subset compares against nothing of theirs).
$(NEWEST_STAMP): requirements-newest.txt pyproject.toml | $(NEWEST_PY)
	$(NEWEST_PY) -m pip install -r requirements-newest.txt
	$(NEWEST_PY) -m pip install --no-deps -e .
	touch $@

# The subset is marked in tests/conftest.py (NEWEST). `pip check` last: it fails when a newest
# release lies outside pyproject.toml's bounds (after `make refresh-newest`), once the subset
# has shown whether that release works.
test-newest: $(NEWEST_STAMP)
	$(NEWEST_PY) -c 'import jax, flax; print("newest set: jax", jax.__version__, "flax", flax.__version__)'
	$(NEWEST_PY) -m pytest -q -ra -m newest $(XDIST) $(PYTEST_ARGS) tests
	$(NEWEST_PY) -m pip check

refresh-newest:
	.ci/refresh-newest

demo: $(RUNTIME_STAMP)
	$(PY) -m sgdc_jax.demo

# The quickstart notebook, executed top to bottom with this venv's Python as the kernel (the
# `python3` kernel resolves to the Python running nbconvert; JUPYTER_PREFER_ENV_PATH puts the
# venv's kernel specs before a user's own). NOTEBOOK and NOTEBOOK_OUT pick another copy and
# output folder (tests/test_notebook.py runs a copy outside the checkout).
NOTEBOOK_STAMP := $(VENV)/.installed-notebook
NOTEBOOK ?= notebooks/quickstart.ipynb
NOTEBOOK_OUT ?= runs/notebook

$(NOTEBOOK_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install -e '.[notebook]'
	touch $@

notebook: $(NOTEBOOK_STAMP)
	JUPYTER_PREFER_ENV_PATH=1 $(PY) -m jupyter nbconvert --to notebook --execute \
	  --ExecutePreprocessor.timeout=1200 --output-dir=$(NOTEBOOK_OUT) $(NOTEBOOK)
	@echo "executed copy: $(NOTEBOOK_OUT)/$(notdir $(NOTEBOOK))"
	@echo "to run it interactively: $(PY) -m pip install jupyterlab"
	@echo "                         $(VENV)/bin/jupyter lab $(NOTEBOOK)"

bench: $(RUNTIME_STAMP)
	$(PY) benchmarks/bench_sgdc.py

# What a lent GPU machine (no network) needs besides its image: wheels for CPython 3.12 into
# .devcarry/wheels (DATA=JPEG_DIR also copies an ISIC 2017 folder to .devcarry/isic2017).
device-wheels: $(PY)
	$(PY) benchmarks/device_wheels.py --out=.devcarry $(if $(DATA),--data=$(DATA))

clean:
	rm -rf runs .pytest_cache
