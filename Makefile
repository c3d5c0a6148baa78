# Two commands do all the set-up on a fresh machine:
#   make demo   -> install, simulate the 21-subject trial, run participant + group levels
#   make test   -> install (with test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
NPROCS ?= 2

.PHONY: install install-test demo test clean

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

test: install-test
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -q -ra tests

clean:
	rm -rf $(VENV) $(DEMO_DIR)
