# Everything runs in .venv, created on first use. PyTorch's CPU build is installed first
# (torch==2.13.0) so that pip never pulls a multi-GB CUDA build for the "torch" requirement.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP   = $(VENV)/.installed

.PHONY: install test lint demo bench compat clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check msn_cli tests bench
	$(BIN)/mypy

demo: install
	$(BIN)/python -m msn_cli.demo demo-out

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf demo-out .bench .pytest_cache .mypy_cache .ruff_cache
