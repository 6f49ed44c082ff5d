# Two commands on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
# pytest-xdist workers: the suite is mostly MXNet compute; two processes use both cores of a CI machine.
TEST_WORKERS ?= 2

.PHONY: venv install demo test test-fast check clean benchmarks-page

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) PYTHON=$(PY) bash scripts/demo.sh

# the static checks first: a finding fails the run (CI runs make test)
test: $(STAMP) check
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(TEST_WORKERS) tests

# static checks: ruff (ruff.toml) on the code, benchmarks and tests, mypy (mypy.ini) on the package
check: $(STAMP)
	$(VENV)/bin/ruff check captioning benchmarks tests
	$(VENV)/bin/mypy captioning

test-fast: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" tests

# docs/benchmarks.md from the records in benchmarks/results/
benchmarks-page: $(STAMP)
	$(PY) -m benchmarks.page

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
