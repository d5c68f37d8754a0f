# Two commands do all set-up on a fresh machine that has only Python:
#   make run    installs the core and every backend into .venv, then runs the main job (hami sandbox)
#   make test   installs the same, runs `make check`, then every test of the core and all backends
#   make check  lint (ruff), format (ruff format --check), types (mypy) and import layers (lint-imports)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BACKENDS := $(sort $(wildcard backends/*/pyproject.toml))
STAMP := $(VENV)/.hami-installed

.PHONY: install run check test clean examples dist browser docs

install: $(STAMP)

$(STAMP): pyproject.toml $(BACKENDS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach b,$(BACKENDS),-e $(dir $(b)))
	touch $(STAMP)

run: install
	$(BIN)/hami sandbox

# Every tool runs even when an earlier one fails, so one pass shows all findings; configured in pyproject.toml.
CHECK_PATHS := core backends tests bench tools docs/examples conftest.py
check: install
	@status=0; \
	$(BIN)/ruff check $(CHECK_PATHS) || status=1; \
	$(BIN)/ruff format --check $(CHECK_PATHS) || status=1; \
	$(BIN)/mypy || status=1; \
	PYTHONPATH=docs/examples/hami-acme $(BIN)/lint-imports || status=1; \
	exit $$status

# tests/ui drive Debian's chromium through Playwright: installed here when missing and we are root with
# apt (CI); elsewhere a note, and those tests skip saying what to install.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || \
		echo "note: no chromium (as root: apt-get install -y chromium); the browser tests in tests/ui will skip"

test: install check browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) dist

# deploy/examples is the copy people edit; the hami wheel ships it as hami/sandbox/examples
# (tests/install/test_packaged_examples.py fails until the two are the same again).
examples:
	rm -f core/hami/sandbox/examples/*.yaml
	cp deploy/examples/*.yaml core/hami/sandbox/examples/
	for d in deploy/examples/*/; do rm -rf core/hami/sandbox/examples/$$(basename $$d) && mkdir core/hami/sandbox/examples/$$(basename $$d) && cp $$d*.yaml core/hami/sandbox/examples/$$(basename $$d)/; done

# docs/backends.md's vendor table from `hami backends --json` of this install
# (tests/deploy/test_vendor_table.py fails until it is regenerated).
docs: install
	$(BIN)/python tools/vendor_table.py

# Wheels and sdists of the core and every backend into dist/, metadata checked with twine.
dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(foreach b,$(BACKENDS),$(BIN)/python -m build --outdir dist $(dir $(b)) &&) true
	$(BIN)/python -m twine check --strict dist/*

# The DaemonSet/scheduler image from those wheels (context: dist/). BASE_IMAGE: any Debian-like image
# with python3 and its venv module. OFFLINE=1: dependencies from dist/wheelhouse, fetched here for
# this machine's Python (which must then be the base image's), so the build needs no index.
IMAGE ?= hami:dev
BASE_IMAGE ?= python:3.11-slim
image: dist
	$(if $(OFFLINE),$(BIN)/python -m pip download --quiet --dest dist/wheelhouse "$$(ls dist/hami-*.whl)[certs]" dist/hami_*.whl && rm -f dist/wheelhouse/hami*)
	docker build -f deploy/docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		$(if $(OFFLINE),--build-arg PIP_INSTALL_ARGS="--no-index --find-links /dist/wheelhouse") $(DOCKER_BUILD_ARGS) -t $(IMAGE) dist
