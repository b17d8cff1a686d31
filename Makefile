# Two commands on a fresh machine: `make run` (set-up + the server) and `make test`
# (set-up + the whole suite). Set-up is idempotent and only redone when pyproject changes.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test bench browser registry clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build, so nothing later pulls a multi-GB CUDA wheel. Then the
# MiniLM ONNX export into the user's cache (~/.cache/neural-memory), which first use would do.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,langgraph]'
	$(BIN)/python -m memory.encoder_export
	touch $(STAMP)

# Headless Chromium for the dashboard's browser tests (Debian packages; needs root + apt).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "note: /usr/bin/chromium missing and apt-get unavailable; browser tests will skip"; fi; \
	fi

# The CNCF distribution registry (Debian's docker-registry; runs without Docker) and htpasswd,
# for the push/pull tests of memory images against a real OCI registry.
registry:
	@if [ ! -x /usr/bin/docker-registry ] || [ ! -x /usr/bin/htpasswd ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-registry apache2-utils; \
	  else echo "note: docker-registry/htpasswd missing and apt-get unavailable; registry tests will skip"; fi; \
	fi

setup: $(STAMP) browser registry

run: setup
	$(BIN)/neural-memory serve

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.memory_bench

clean:
	rm -rf $(VENV) .neural-memory .pytest_cache test-artifacts
