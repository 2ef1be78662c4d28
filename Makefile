# Two commands on a fresh machine (Linux, Python 3.11):
#   make run     creates ./venv with the README's pinned install on first use, then runs the default job
#   make test    the same venv, then the test suite (what CI runs)
# ARGS passes flags through: make run ARGS="--walks 2 --train-time 30"; make test ARGS="-m 'not mpi'"
PYTHON ?= python3.11
VENV ?= venv
RANKS ?= 8
BIN := $(CURDIR)/$(VENV)/bin
# mpirun and the tests' own subprocesses come from the venv
export PATH := $(BIN):$(PATH)

.PHONY: run test venv

venv: $(VENV)/installed

# the README's install, step for step; redone when a requirements file changes
$(VENV)/installed: requirements.txt requirements-test.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -r requirements.txt -r requirements-test.txt -c constraints.txt
	touch $@

run: venv
	$(BIN)/mpirun -n $(RANKS) $(BIN)/python main.py $(ARGS)

test: venv
	$(BIN)/python -m pytest $(ARGS)
