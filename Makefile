# The two commands: `make dev` and `make test`. Both install what they need on a fresh machine.
SHELL := /bin/bash
export PYENV_VERSION := 3.12
# Python 3.12: on PATH, else pyenv's install even when its shims are not on PATH.
PYTHON ?= $(shell command -v python3.12 || ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1 | grep . || command -v python3)
UV := $(PYTHON) -m uv
VENV := .venv
export UV_PYTHON := $(PYTHON)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Two workers (pytest-xdist): most tests wait on subprocesses, servers and disk, not the CPU.
PYTEST_ARGS ?= -n 2 --dist loadscope --durations=25

.PHONY: install system-deps dev test lint bench clean

$(VENV)/.installed: pyproject.toml uv.lock
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

install: system-deps $(VENV)/.installed

# bcftools (ground truth in tests), bgzip/tabix (indexing VCFs), chromium (web UI test),
# postgresql (the Dagster instance test starts its own server from Debian's binaries).
system-deps:
	@missing=""; \
	command -v bcftools >/dev/null || missing="$$missing bcftools"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v bgzip >/dev/null || missing="$$missing tabix"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check vczstore_dagster vczstore_dagster_tests benchmarks

dev: install
	$(VENV)/bin/python -m vczstore_dagster.dev

bench: install
	$(VENV)/bin/python -m benchmarks.run $(if $(QUICK),--quick,)

clean:
	rm -rf data .dagster_home test-output
