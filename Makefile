# Each target sets itself up: a virtual environment in .venv with the project installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SWEEP ?= cardio_clr
ARGS ?=
# pytest processes: the end-to-end tests spend much of their time waiting on Ray's and MLflow's
# processes, so two share two cores well (the suite: ~18 min alone, ~11 min as two).
TEST_WORKERS ?= 2

.PHONY: run test test-fast lint setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m sweeps.run $(SWEEP) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole suite, slow end-to-end tests included (CI runs exactly this).
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
