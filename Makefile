# Two commands do all set-up on a fresh machine that has only Python:
#   make run    installs the core and every backend into .venv, then runs the main job (hami sandbox)
#   make test   installs the same, then runs every test of the core and all backends
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS := $(sort $(wildcard backends/*/pyproject.toml))
STAMP := $(VENV)/.hami-installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml $(BACKENDS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach b,$(BACKENDS),-e $(dir $(b)))
	touch $(STAMP)

run: install
	$(BIN)/hami sandbox

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
