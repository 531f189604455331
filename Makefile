# Two commands do everything on a fresh machine:
#   make demo   create .venv if missing, then run the main job on the synthetic dataset
#   make test   create .venv if missing, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep XLA's CPU runtime off the YNNPACK fusion path (see sgdc_jax/_xla_flags.py) also for
# subprocesses that tests start before importing sgdc_jax.
PYTEST_ARGS ?=

.PHONY: test demo bench env clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(PY) -m sgdc_jax.demo

bench: $(STAMP)
	$(PY) benchmarks/bench_sgdc.py

clean:
	rm -rf runs .pytest_cache
