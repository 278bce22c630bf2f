# Two commands do all set-up on a fresh machine with Python 3.11+ and pip (README, "Quick start"):
#   make demo   -> creates .venv, installs torch (CPU build) + this package, runs `tim demo`
#   make test   -> same virtual environment, runs the default test suite (what .ci/run calls)
#   make app    -> serves `tim app` on the bundled text-to-image model (bundled:scenes) at http://127.0.0.1:7860/
PYTHON      ?= python3
VENV        ?= .venv
BIN          = $(VENV)/bin
# The CPU wheels of torch: a plain `pip install torch` on Linux pulls a multi-GB CUDA build.
# Where this index cannot be reached pip warns, retries briefly and falls back to PyPI / local
# wheels. Only torch itself is looked up there (--no-deps); its dependencies come from PyPI below.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH       ?= torch==2.13.0
DEMO_OUT    ?= outputs/demo
STAMP        = $(VENV)/.installed

.PHONY: demo test test-slow test-full lint docs docs-build release-check app venv clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps "$(TORCH)" --extra-index-url $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tim demo --out $(DEMO_OUT) --overwrite

# The fast suite with coverage: the per-module table (fully covered files left out), then the floors.
# coverage's fail_under is one global number, so the per-package floors are two more reports on the same
# data. Each floor sits a little below what the suite measured (CONTRIBUTING.md, "Coverage").
COV_CORE         = src/tim/paths.py,src/tim/timesteps.py,src/tim/guidance.py,src/tim/objective.py,src/tim/derivative.py,src/tim/samplers.py,src/tim/network.py
COV_MODELS       = src/tim/models/*
COV_FLOOR_ALL    ?= 92
COV_FLOOR_CORE   ?= 96
COV_FLOOR_MODELS ?= 96

test: $(STAMP)
	$(BIN)/python -m pytest -q --cov=tim --cov-report=term-missing:skip-covered --cov-fail-under=$(COV_FLOOR_ALL)
	@printf 'coverage of the math core: %s%% (floor $(COV_FLOOR_CORE)%%)\n' "$$($(BIN)/coverage report --include='$(COV_CORE)' --format=total)"
	@$(BIN)/coverage report --include='$(COV_CORE)' --fail-under=$(COV_FLOOR_CORE) --format=total >/dev/null \
		|| { echo "make test: the math core's coverage fell below $(COV_FLOOR_CORE)%"; exit 1; }
	@printf 'coverage of tim.models: %s%% (floor $(COV_FLOOR_MODELS)%%)\n' "$$($(BIN)/coverage report --include='$(COV_MODELS)' --format=total)"
	@$(BIN)/coverage report --include='$(COV_MODELS)' --fail-under=$(COV_FLOOR_MODELS) --format=total >/dev/null \
		|| { echo "make test: tim.models' coverage fell below $(COV_FLOOR_MODELS)%"; exit 1; }

# The slow suite (kill -9 resume, 2-process torchrun, preemption, the three demos end to end on short
# budgets), ~15 min on 2 cores; .ci/run runs it after `test`. The ten longest tests are listed, so a
# test that grows shows up in CI's log. `-m slow` selects no gpu or full test (tests/conftest.py).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=10

# The full runs (the demos' default 15-minute commands with their quality and time assertions, a
# 4096x4096 decode): ~35 min on 2 cores; not in CI. CONTRIBUTING.md, "Test suites".
test-full: $(STAMP)
	$(BIN)/python -m pytest -q -m full --durations=0

# Format check, lint, types and the layer contract (CONTRIBUTING.md says what each checks and why).
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/basedpyright
	$(BIN)/lint-imports --no-cache

# The documentation site: `make docs` serves it at http://127.0.0.1:8000/, `make docs-build` is CI's strict build.
# NO_MKDOCS_2_WARNING: silences the theme's banner about MkDocs 2 (informational, not a build warning).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Wheel + sdist, twine check, then the fast suite against the installed wheel in a fresh venv.
release-check: $(STAMP)
	PYTHON=$(PYTHON) DEV_PYTHON=$(BIN)/python TORCH="$(TORCH)" TORCH_INDEX=$(TORCH_INDEX) bash scripts/release_check.sh

# The local web page on the bundled text-to-image model (no training, no download): http://127.0.0.1:7860/
# On the demo's digits model instead: .venv/bin/tim app --checkpoint outputs/demo/run
app: $(STAMP)
	$(BIN)/tim app

clean-venv:
	rm -rf $(VENV)
