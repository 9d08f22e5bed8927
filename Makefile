# psmpi: `make run` and `make test` install into .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.psmpi-installed
NP     ?= 21
ARGS   ?=

# Open MPI refuses root and more ranks than cores unless told; these are harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe

.PHONY: install run test test-fast clean

# CI pins torch (.ci/constraints.txt: a CPU build, fast to install) for the test install
# only; `pip install 'psmpi[torch]'` leaves users any torch >= 2.1.
$(STAMP): setup.cfg pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -e '.[mpi,test,torch]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mpirun --oversubscribe -n $(NP) $(BIN)/psmpi train --method ef21-sgdm $(ARGS)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not mpi and not slow"

clean:
	rm -rf $(VENV) results *.egg-info
