# spotshift — every target sets up what it needs (venv, Python deps, Azurite, tools).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check
STAMP := $(VENV)/.spotshift-installed
AZURITE := tools/node_modules/.bin/azurite-blob
POLICY_VENV ?= .venv-policy
POLICY_PY := $(POLICY_VENV)/bin/python
POLICY_STAMP := $(POLICY_VENV)/.spotshift-installed
PYTEST_ARGS ?=

.PHONY: help setup test demo bench bench-workload lint clean system-tools rclone image screenshots policy-setup

help:
	@echo "make demo   - set up and run the local migration rehearsal on the emulators"
	@echo "make test   - set up and run the full test suite"
	@echo "make bench  - set up and run the migration benchmark (engine vs seed loop vs rclone)"
	@echo "make bench-workload - queue and API costs on Azurite: 50 vs 20,000 jobs, 1 vs 8 workers"
	@echo "make image  - build the workload container image (IMAGE=spotshift:dev) with Docker or podman"
	@echo "make clean  - remove the venv, node_modules, reports and test artefacts"
	@echo "make screenshots - re-take the README screenshots (tools/screenshots/) in chromium"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "spotshift needs Python 3.11+, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,infra]'
	@touch $@

$(AZURITE): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 18+ and npm (Azurite, the Azure Blob emulator, comes from npm)" >&2; exit 2; }
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(STAMP) $(AZURITE)

# The policy pack (policy/) and its tests run in a venv of their own: pulumi-policy pins protobuf 5
# (pulumi/pulumi-policy#448), which in .venv would hold google-api-core back (and make it warn on every CLI run).
$(POLICY_STAMP): pyproject.toml policy/requirements.txt
	@test -x $(POLICY_PY) || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(POLICY_PY) -m pip install $(PIP_FLAGS) -e '.[dev,infra,policy]' -r policy/requirements.txt
	@touch $@

policy-setup: $(POLICY_STAMP)

# cloud-init's schema validator is not on PyPI; Debian/Ubuntu ship it. Installed
# where we can (root + apt-get); elsewhere the one test that needs it says why it skips.
system-tools:
	@if ! command -v cloud-init >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing cloud-init (schema validator) from apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cloud-init >/dev/null; \
	  else echo "note: cloud-init not installed and cannot install it here (need root + apt-get)"; fi; \
	fi
	@# The browser test drives Debian's chromium through Playwright (never `playwright install`).
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (browser test) from apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not installed and cannot install it here (need root + apt-get)"; fi; \
	fi

rclone:
	@if ! command -v rclone >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone >/dev/null; \
	  else echo "rclone is needed for the benchmark: install it (e.g. apt-get install rclone)" >&2; exit 2; fi; \
	fi

test: setup system-tools policy-setup
	$(PY) -m pytest --ignore=tests/policy $(PYTEST_ARGS)
	$(POLICY_PY) -m pytest tests/policy $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/spotshift rehearse

bench: setup rclone
	$(PY) bench/bench_migration.py

# e.g. make bench-workload BENCH_ARGS="--before-root /tmp/before" (a checkout of an earlier commit)
bench-workload: setup
	$(PY) bench/bench_workload.py $(BENCH_ARGS)

# The workload image (no Pulumi in it), with whichever engine is here: Docker first, else podman.
IMAGE ?= spotshift:dev
image:
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then docker build -t $(IMAGE) .; \
	elif command -v podman >/dev/null; then podman build -t $(IMAGE) .; \
	else echo "make image needs Docker or podman (../shared/tools/build-image-offline.sh builds without a registry)" >&2; exit 2; fi

# Re-take the README's screenshots (tools/screenshots/) with the browser test.
screenshots: setup system-tools
	SPOTSHIFT_UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/app/test_browser.py -q

lint: setup
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile

clean:
	rm -rf $(VENV) $(POLICY_VENV) tools/node_modules rehearsal-report.json rehearsal-report.html rehearsal-logs .pytest_cache tests/artifacts
