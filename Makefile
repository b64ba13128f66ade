# Two commands do all set-up on a fresh machine:
#   make run    the main job (trains or loads the model, writes figures to build/)
#   make test   the whole test suite
# Each creates .venv from requirements.txt first when it is missing or out of date.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast setup clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -r requirements.txt -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import course, tensorflow, nbgrader"
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
