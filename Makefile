# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU build (==2.13.0) in pyproject.toml; never let a range pull CUDA.
EXTRAS := train,dev,bench

.PHONY: install demo test lint typecheck unit integration bench quality clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/streamrec demo

lint: install
	$(BIN)/ruff check streamrec tests benchmarks migrations
	$(BIN)/ruff format --check streamrec tests benchmarks migrations

typecheck: install
	$(BIN)/mypy streamrec

test: lint typecheck
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit tests/contract

bench: install
	$(BIN)/python benchmarks/throughput.py

quality: install
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis
