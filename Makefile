# Two commands do all the set-up on a fresh machine:
#   make demo   -> install, simulate the 21-subject trial, run participant + group levels
#   make test   -> install (with test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
NPROCS ?= 2

.PHONY: install install-test chromium demo test test-unit test-default test-slow coverage mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .[atlas]

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .[test]

demo: install
	$(BIN)/ptsd-bidsapp-simulate $(DEMO_DIR)/bids --n-subjects 21 --seed 1 --force
	$(BIN)/ptsd_bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out participant -w $(DEMO_DIR)/work --nprocs $(NPROCS) --seed 1 --skip-bids-validation
	$(BIN)/ptsd_bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out group -w $(DEMO_DIR)/work --nprocs $(NPROCS) --seed 1 --skip-bids-validation

# headless Chromium for tests/reports/test_browser.py (the Debian package; installed when missing and
# this is root with apt-get, as on CI's fresh Debian machine; otherwise that test skips, naming why)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium fonts-dejavu-core; \
	  else echo "make chromium: chromium is missing and needs root + apt-get to install; the browser test will skip"; fi; }

# every tier, as CI runs it
test: install-test chromium
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q -ra tests

# one tier (tests/conftest.py): unit (< 1 min), default (no end-to-end runs), slow (end to end only)
test-unit: install-test
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q -ra -m unit tests

test-default: install-test chromium
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q -ra -m "not slow" tests

test-slow: install-test
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q -ra -m slow tests

# line coverage including the nipype workers (settings in .coveragerc; report in coverage_report.txt)
coverage: install-test
	COVERAGE_PROCESS_START=$(CURDIR)/.coveragerc $(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q \
		-p pytest_cov --cov --cov-config=.coveragerc tests
	$(BIN)/python -m coverage report --rcfile=.coveragerc | tee coverage_report.txt

# mutation testing of the numerical core against the unit tier (CPU-heavy: see scripts/mutation.sh)
mutation: install-test
	scripts/mutation.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR)
