# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch, installed first and on its own so that no extra pulls another build. From PyPI on
# Linux this wheel brings CUDA libraries (GBs): TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the CPU build from PyTorch's index (the dev/CI machines get it from a local wheelhouse).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_OUT ?= runs/demo

.PHONY: demo test lint install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[all]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[all,scale,test,lint]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/q2pt experiment --preset demo --out $(DEMO_OUT)

test: install-test
	$(BIN)/python -m pytest -q

# ruff (lint) and mypy (types) over src, tests and bench: zero findings (CI runs it)
lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
