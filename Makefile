# mlplab — `make help` lists the targets.
# Every target creates ./.venv and installs pinned dependencies on first use.
# torch is pinned (constraints.txt) to the CPU build so a CPU machine never pulls CUDA wheels;
# on a GPU machine install your CUDA torch into .venv first (pip keeps it: same version).

PY_BOOT ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-install test-all lint format bench bench-population figures clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install mlplab + pinned deps (CPU torch)

train: $(STAMP)  ## train the default experiment ("Will I pass this class?") on CPU
	$(VENV)/bin/mlplab-train $(ARGS)

test: $(STAMP)  ## fast test suite (a few minutes on 2 cores)
	$(PY) -m pytest -m "not slow and not gpu" -n 2 $(PYTEST_ARGS)

test-install: $(STAMP)  ## build the wheel, install it in a fresh venv, run the CLIs outside the repo
	$(PY) -m pytest -m install $(PYTEST_ARGS)

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint + format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMP)  ## ruff autofix + format
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

bench: $(STAMP)  ## throughput benchmark: mlplab vs raw PyTorch vs Lightning+DataLoader vs scikit-learn
	$(PY) scripts/bench_throughput.py $(ARGS)

bench-population: $(STAMP)  ## population training vs one trial after another (toy, breast_cancer, flights)
	$(PY) scripts/bench_population.py $(ARGS)

figures: $(STAMP)  ## render the lecture figures into docs/figures/
	$(PY) scripts/make_figures.py $(ARGS)

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf logs outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
