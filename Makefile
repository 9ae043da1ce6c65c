# Two commands on a fresh machine: `make demo` (the main job on the bundled mini model) and `make test`.
# TORCH pins the torch wheel: torch==2.13.0 is a CPU wheel on the reference machine; GPU users
# pass their own, e.g. `make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench
$(BIN)/unsee: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/unsee

demo: setup
	$(BIN)/unsee erase --model mini --method eap --concept circle --template "a {}" --out out/circle

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
