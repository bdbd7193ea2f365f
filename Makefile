# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest workers: most tests wait on servers and child processes, so two keep a 2-core machine busy.
TEST_WORKERS ?= 2

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev,openvino]'
	touch $@

## make demo: install, then run the retraining flow on the embedded sample dataset (local MLflow + Prefect).
demo: $(VENV)/.installed-dev
	$(BIN)/python -m flows.retrain

## make test: install with dev extras, lint, type-check and run the tests.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadfile --durations=30

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/cli_startup.py

clean:
	rm -rf data/prepared models reports mlflow.db mlartifacts .pytest_cache
