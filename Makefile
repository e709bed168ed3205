# Two commands for a newcomer on a fresh clone: `make demo` and `make test`.
# Both create .venv when missing and install the project editable (with its dev extra).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-fast demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The whole suite, the multi-process and resume tests included (what CI runs).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# Skip the slow multi-process and real-data runs while iterating.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# The main job: a real self-supervised run on scikit-learn's digits, then a probe table.
demo: $(STAMP)
	$(VENV)/bin/multissl demo

# every benchmark (peers from the bench extra); `make bench BENCH_ARGS=--quick` for a smoke run
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
