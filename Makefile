# Two commands do all set-up on a fresh machine:
#   make run    the main job (trains or loads the model, writes figures to build/)
#   make test   the whole test suite
# Each creates .venv from requirements.txt first when it is missing or out of date.

# The first of python3, python3.13, python3.12, python3.11 that is a supported version (3.11-3.13),
# unless PYTHON is given: `make run PYTHON=/path/to/python3.12`.
SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
  $$p -c '$(SUPPORTED)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast setup clean

# Stops with one line, before anything is installed, when no supported Python was found or given.
PYTHON_VERSION = $(shell $(or $(PYTHON),python3) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
NO_PYTHON = the course needs Python 3.11, 3.12 or 3.13 and $(if $(PYTHON),$(PYTHON) is $(or $(PYTHON_VERSION),not a Python),\
none of python3, python3.13, python3.12, python3.11 on PATH is one (python3 is $(or $(PYTHON_VERSION),missing))): \
install one of them, or name it: make run PYTHON=/path/to/python3.12

$(STAMP): requirements.txt pyproject.toml
	$(if $(filter 3.11 3.12 3.13,$(PYTHON_VERSION)),,$(error $(NO_PYTHON)))
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@# setuptools warns that a flat layout's editable install puts the checkout on sys.path: that is the intent
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -r requirements.txt -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import course.console, nbgrader; course.console.quiet_tensorflow(); import tensorflow"
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } ; } || \
	  echo "note: bubblewrap (bwrap) is not installed: the grader needs it to isolate submissions (apt-get install bubblewrap)"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m course run

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf build .pytest_cache

# Regenerate the student notebooks (notebooks/) from the instructor sources (solutions/).
.PHONY: release
release: $(STAMP)
	$(PY) -m grader.release

# Redraw the figures the README shows (docs/figures/*.png, committed).
.PHONY: figures
figures: $(STAMP)
	$(PY) -m course figures --out docs/figures

# Ratio benchmarks of the fast paths against the naive ways (build/benchmarks.json);
# `make bench BENCH_ARGS=--quick` shrinks every size (a smoke run, well under a minute).
.PHONY: bench
bench: $(STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)
