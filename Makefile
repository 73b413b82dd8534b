# binder-federation: everything starts from a fresh clone with Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench soak venv tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## make demo: start a local federation (router + dev members on loopback)
demo: venv
	$(BIN)/binderfed demo

## make test: the whole suite, with a private redis-server started by the tests
test: venv tools
	$(BIN)/python -m pytest

## make tools: binaries the suite runs for real (redis-server, chromium, prometheus, helm into the venv)
tools: venv
	scripts/ensure-tools $(VENV)

## make bench: performance figures, printed as tables (installs wrk, the load generator, when missing)
bench: venv tools
	scripts/ensure-bench-tools
	$(BIN)/python -m benchmarks

## make soak: the router with Redis and dev members under steady launch traffic (SOAK_MINUTES=10), not part of make test
SOAK_MINUTES ?= 10
soak: venv tools
	$(BIN)/python -m benchmarks.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
