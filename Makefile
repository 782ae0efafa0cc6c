# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-test browser-deps db-deps site serve audit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamp files keep re-installs cheap; they change when pyproject.toml does.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian's Chromium for the browser tests, and the npm tools (axe-core, Lighthouse) pinned in package-lock.json
# (Debian's nodejs and npm first when a fresh machine has no npm; bookworm's Node 18.19 meets Lighthouse's >=18.16).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "Install Debian's chromium package (sudo apt-get install chromium) for the browser tests."; exit 1; fi; \
	fi
	@if [ -f package-lock.json ] && [ ! -d node_modules ] && ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "Install Debian's nodejs and npm packages (sudo apt-get install nodejs npm) for axe-core and Lighthouse."; exit 1; fi; \
	fi
	@if [ -f package-lock.json ] && [ ! -d node_modules ]; then npm install --no-audit --no-fund --loglevel=error; fi

# Debian's PostgreSQL 15 for the ledger's tests on PostgreSQL: the tests start their own server from its binaries
# (initdb in a temporary folder, as the postgres user); the package's own cluster is not used.
db-deps:
	@if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "Install Debian's postgresql package (sudo apt-get install postgresql) for the ledger's PostgreSQL tests."; exit 1; fi; \
	fi

site: install
	$(BIN)/policy-site build --strict

# Always rebuild, so the served site matches docs/ (serve alone builds only when site/ is missing).
run: site
	$(BIN)/policy-site serve --host $(HOST) --port $(PORT)

test: install-test browser-deps db-deps
	$(BIN)/python -m pytest

audit: install browser-deps
	$(BIN)/python -m scripts.audit

clean:
	rm -rf $(VENV) site var audit test-artifacts node_modules
