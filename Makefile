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

demo: $(STAMP)
	@echo "make demo: not built yet (issue 8: cloud twin and end-to-end demo). Run 'make test' for now."

bench: $(STAMP)
	$(PY) -m tools.bench

lint: $(STAMP)
	$(VENV)/bin/ruff check lib firmware boards tools host_tests

clean:
	rm -rf $(VENV) build .pytest_cache
