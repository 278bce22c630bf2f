# Two commands do all set-up on a fresh machine with Python 3.11+ and pip:
#   make demo   -> creates .venv, installs the package, runs `tim demo` (trains on the bundled digits)
#   make test   -> creates .venv, installs the package with test extras, runs the default test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test venv

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch 2.13.0 (a plain `torch` would pull a multi-GB CUDA build).
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet torch
	$(BIN)/pip install --quiet -e ".[dev]"

venv: $(BIN)/activate

demo: venv
	$(BIN)/tim demo --out outputs/demo

test: venv
	$(BIN)/python -m pytest -q
