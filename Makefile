# `make bench` and `make test` each set everything up from a fresh clone: a .venv with the pinned toolchain.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEVICE ?= host-cpu

.PHONY: bench test test-slow report clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,coreml,qnn]'
	touch $@

bench: $(STAMP)  ## host-cpu sweep of the RETHINED paper's models at 1024/2048/4096, then its markdown report
	$(BIN)/rbench run --device $(DEVICE)
	$(BIN)/rbench report --device $(DEVICE) --format markdown

test: $(STAMP)  ## the fast test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)  ## 2K/4K exports and full sweeps
	$(BIN)/python -m pytest -q -m slow

report: $(STAMP)
	$(BIN)/rbench report --device $(DEVICE) --format markdown

clean:
	rm -rf $(VENV) artifacts results build *.egg-info
