# The two commands: `make demo` (set up, then run the offline demo) and `make test` (set up, then
# run the tests). Both are idempotent and install into ./.venv, torch==2.13.0 first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vlda-installed

.PHONY: demo test test-all test-reliability lint bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[dev,tensorboard,classic]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlda demo --out runs/demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

# The reliability suite alone, its slow kill loops included (docs/reliability.md).
test-reliability: $(STAMP)
	$(PY) -m pytest -q -m '' tests/reliability

bench: $(STAMP)
	$(PY) benchmarks/dapl_speed.py
