# Everything runs in .venv, created on first use. PyTorch's CPU build is installed first
# (torch==2.13.0) so that pip never pulls a multi-GB CUDA build for the "torch" requirement.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP   = $(VENV)/.installed

.PHONY: install test lint demo bench compat torchvision docs clean

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
	$(BIN)/ruff check msn_cli tests bench tools
	$(BIN)/mypy
	$(BIN)/python tools/check_layout.py

demo: install
	$(BIN)/python -m msn_cli.dev.demo demo-out

# BENCH_ARGS: bench/run.py's options, e.g. BENCH_ARGS="--against REV" for before and after
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# docs/cli.md, the command reference, generated from the Typer app, and docs/tour.md,
# generated from a real run of the demo's commands (tests/test_docs.py checks both)
docs: install
	$(BIN)/python -m msn_cli.dev.clidocs > docs/cli.md.tmp && mv docs/cli.md.tmp docs/cli.md
	$(BIN)/python -m msn_cli.dev.tour docs/tour.md

# A second environment with transformers 4.57 (and the huggingface_hub<1.0 it requires): the
# conversion, verify and compatibility tests run there too.
COMPAT_VENV  ?= .venv-compat
COMPAT_TF    ?= transformers==4.57.*
COMPAT_STAMP  = $(COMPAT_VENV)/.installed
COMPAT_TESTS  = tests/test_compat.py tests/test_convert.py tests/test_seed_equivalence.py \
                $(wildcard tests/test_verify*.py) tests/test_preprocessing.py tests/test_api.py \
                tests/test_push.py tests/test_push_errors.py

$(COMPAT_STAMP): pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(COMPAT_VENV)/bin/python -m pip install -q -e ".[dev]" "$(COMPAT_TF)"
	touch $(COMPAT_STAMP)

compat: $(COMPAT_STAMP)
	@$(COMPAT_VENV)/bin/python -c "from importlib.metadata import version as v; \
	print('compat:', ', '.join(d + ' ' + v(d) for d in ('torch', 'transformers', 'huggingface_hub')))"
	MSN_EXPECT_TRANSFORMERS=4.57 $(COMPAT_VENV)/bin/python -m pytest -q $(COMPAT_TESTS)

# torchvision's own outputs for the preprocessing tests: MSN's evaluation transform as
# torchvision computes it, and transformers' torchvision backend, on the bundled photos. PyPI's
# torchvision does not import beside torch 2.13.0+cpu, so they are made in a third venv with
# torch 2.14.1 + torchvision 0.29.1 (a CUDA build: 5.8 GB; about 90 s to install from the local
# wheel store on x86_64) and stored in tests/fixtures/ (tests/torchvision_fixture.py), which
# every test run compares with. This target makes them again, then runs the preprocessing tests
# against torchvision itself there (MSN_EXPECT_TORCHVISION turns "no torchvision" skips into
# failures). Run it when the photos, the processor configuration or torchvision change.
TV_VENV   ?= .venv-tv
TV_TORCH  ?= torch==2.14.1 torchvision==0.29.1
TV_STAMP   = $(TV_VENV)/.installed

$(TV_STAMP): pyproject.toml
	test -x $(TV_VENV)/bin/python || $(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/python -m pip install -q --upgrade pip
	$(TV_VENV)/bin/python -m pip install -q $(TV_TORCH)
	$(TV_VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $(TV_STAMP)

torchvision: $(TV_STAMP)
	$(TV_VENV)/bin/python -m tests.torchvision_fixture
	MSN_EXPECT_TORCHVISION=1 $(TV_VENV)/bin/python -m pytest -q tests/test_preprocessing.py

clean:
	rm -rf demo-out .bench .pytest_cache .mypy_cache .ruff_cache
