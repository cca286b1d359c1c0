# Set-up and entry points. Everything runs from .venv, built from the pinned requirements.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv test demo bench lint clean

all: test

venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -n 4 --dist loadgroup $(PYTEST_ARGS)

CLOUD ?= huawei
MODEM ?= bg96
TRANSPORT ?= native
DEMO_ARGS ?=

demo: $(STAMP)
	$(PY) -m tools.demo --cloud $(CLOUD) --modem $(MODEM) --transport $(TRANSPORT) $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m tools.bench

lint: $(STAMP)
	$(VENV)/bin/ruff check lib firmware boards tools host_tests

clean:
	rm -rf $(VENV) build .pytest_cache
