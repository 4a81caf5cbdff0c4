# spotshift — every target sets up what it needs (venv, Python deps, Azurite, tools).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check
STAMP := $(VENV)/.spotshift-installed
AZURITE := tools/node_modules/.bin/azurite-blob
PYTEST_ARGS ?=

.PHONY: help setup test demo bench bench-workload lint clean system-tools rclone

help:
	@echo "make demo   - set up and run the local migration rehearsal on the emulators"
	@echo "make test   - set up and run the full test suite"
	@echo "make bench  - set up and run the migration benchmark (engine vs seed loop vs rclone)"
	@echo "make bench-workload - queue and API costs on Azurite: 50 vs 20,000 jobs, 1 vs 8 workers"
	@echo "make clean  - remove the venv, node_modules and reports"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spotshift needs Python 3.11+, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	@touch $@

$(AZURITE): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ and npm (Azurite, the Azure Blob emulator, comes from npm)" >&2; exit 2; }
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMP) $(AZURITE)

# cloud-init's schema validator is not on PyPI; Debian/Ubuntu ship it. Installed
# where we can (root + apt-get); elsewhere the one test that needs it says why it skips.
system-tools:
	@if ! command -v cloud-init >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing cloud-init (schema validator) from apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cloud-init >/dev/null; \
	  else echo "note: cloud-init not installed and cannot install it here (need root + apt-get)"; fi; \
	fi

rclone:
	@if ! command -v rclone >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null; \
	  else echo "rclone is needed for the benchmark: install it (e.g. apt-get install rclone)" >&2; exit 2; fi; \
	fi

test: setup system-tools
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/spotshift rehearse

bench: setup rclone
	$(PY) bench/bench_migration.py

bench-workload: setup
	$(PY) bench/bench_workload.py

lint: setup
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile

clean:
	rm -rf $(VENV) tools/node_modules rehearsal-report.json rehearsal-report.html rehearsal-logs .pytest_cache
