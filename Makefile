# Two commands do all set-up on a fresh machine that has only Python:
#   make run    installs the core and every backend into .venv, then runs the main job (hami sandbox)
#   make test   installs the same, then runs every test of the core and all backends
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS := $(sort $(wildcard backends/*/pyproject.toml))
STAMP := $(VENV)/.hami-installed

.PHONY: install run test clean examples dist

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
	rm -rf $(VENV) dist

# deploy/examples is the copy people edit; the hami wheel ships it as hami/sandbox/examples
# (tests/install/test_packaged_examples.py fails until the two are the same again).
examples:
	rm -f core/hami/sandbox/examples/*.yaml
	cp deploy/examples/*.yaml core/hami/sandbox/examples/

# Wheels and sdists of the core and every backend into dist/, metadata checked with twine.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(foreach b,$(BACKENDS),$(BIN)/python -m build --outdir dist $(dir $(b)) &&) true
	$(BIN)/python -m twine check --strict dist/*
