# Set-up and entry points. Everything runs from .venv, built from the pinned requirements.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all help venv test demo bench soak lint clean run firmware mcu-test

# plain `make` prints the targets and variables (make test runs the suite)
all: help

help:
	@echo "cellmqtt: make TARGET [VARIABLE=value ...]"
	@echo ""
	@echo "Targets:"
	@echo "  help    this list (also plain 'make')"
	@echo "  venv    build .venv from the pinned requirements.txt (every other target does it first)"
	@echo "  test    the test suite, 4 workers (PYTEST_ARGS=... passes options to pytest)"
	@echo "  demo    the narrated demo: firmware -> emulated modem -> TLS -> cloud twin"
	@echo "  run     the firmware on this PC against a real modem or the emulator (CONFIG= required)"
	@echo "  bench   the benchmarks (build/bench.json, build/bench.md)"
	@echo "  soak    the chaos soak: random faults of every class, then zero lost, tasks alive, heap flat"
	@echo "  firmware  build a board image (BOARD=stm32_bc660k|qemu_cm3|all; MPY_DIR= your own MicroPython tree)"
	@echo "  mcu-test  the firmware on the emulated Cortex-M3 (qemu_cm3) end to end, both modems"
	@echo "  lint    ruff over lib, firmware, boards, tools, host_tests"
	@echo "  clean   remove .venv, build/ and pytest's cache"
	@echo ""
	@echo "Variables (default):"
	@echo "  demo:  CLOUD=huawei|huawei-binary|iotda|enos|enos-dynamic|mqtt ($(CLOUD))"
	@echo "         MODEM=bg96|bg95|bc660k ($(MODEM))  TRANSPORT=native|socket ($(TRANSPORT))"
	@echo "         SCENARIO=basic|outage ($(SCENARIO))  DEMO_ARGS=--forever|--fresh|... ($(DEMO_ARGS))"
	@echo "  run:   CONFIG=path/config.json  PORT=/dev/ttyUSB2  SECRETS=file  TRANSCRIPT=file  HEAPSIZE=512k"
	@echo "  test:  PYTEST_ARGS=... ($(PYTEST_ARGS))"
	@echo "  soak:  MODEM=bg96|bc660k|bg95 (default both)  MINUTES=$(MINUTES)  SEED=$(SEED)  SOAK_ARGS=..."
	@echo "  firmware: BOARD=$(BOARD)  MPY_DIR=$(MPY_DIR)"
	@echo "  mcu-test: MCU_TEST_ARGS=$(MCU_TEST_ARGS)"
	@echo "  setup: PYTHON=$(PYTHON)  VENV=$(VENV)"

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
SCENARIO ?= basic
DEMO_ARGS ?=

demo: $(STAMP)
	$(PY) -m tools.demo --cloud $(CLOUD) --modem $(MODEM) --transport $(TRANSPORT) --scenario $(SCENARIO) $(DEMO_ARGS)

# make run CONFIG=path/to/config.json [PORT=/dev/ttyUSB2] [SECRETS=file] [TRANSCRIPT=file] [HEAPSIZE=512k]
# The device firmware on the unix port against a real USB modem or the emulator's pty (PORT overrides
# modem.port), run from the config's folder so certs/, state/ and outbox/ resolve there as on a board's flash.
# Exit status 75 (the cloud's "reboot" command) starts it again, as a board would come back after a reset.
CONFIG ?=
PORT ?=
SECRETS ?=
TRANSCRIPT ?=
HEAPSIZE ?=

run: $(STAMP)
	@test -n "$(CONFIG)" || { echo "usage: make run CONFIG=path/to/config.json [PORT=/dev/ttyUSB2]" \
	  "[SECRETS=file] [TRANSCRIPT=file] [HEAPSIZE=512k]" >&2; exit 2; }
	@test -f "$(CONFIG)" || { echo "make run: no such file: $(CONFIG)" >&2; exit 2; }
	@cd "$(dir $(abspath $(CONFIG)))" && while :; do \
	  MICROPYPATH=".frozen:$(CURDIR)/lib:$(CURDIR)/firmware:$(CURDIR)/boards/unix" \
	  "$(abspath $(VENV))/bin/micropython" $(if $(HEAPSIZE),-X heapsize=$(HEAPSIZE)) \
	    "$(CURDIR)/firmware/main.py" --config "$(notdir $(CONFIG))" $(if $(PORT),--port "$(PORT)") \
	    $(if $(SECRETS),--secrets "$(abspath $(SECRETS))") $(if $(TRANSCRIPT),--transcript "$(abspath $(TRANSCRIPT))"); \
	  rc=$$?; [ $$rc -eq 75 ] || exit $$rc; \
	  echo "make run: the firmware asked for a reboot: starting it again"; \
	done

# make firmware [BOARD=stm32_bc660k|qemu_cm3] [MPY_DIR=your/micropython]: the board's real MicroPython image with
# its manifest frozen in, into build/firmware/<board>/ (tools/firmware.py; every board with a firmware.json when
# BOARD is not given). Needs gcc-arm-none-eabi and libnewlib-arm-none-eabi.
BOARD ?=
MPY_DIR ?=
FIRMWARE_BOARDS = $(or $(BOARD),$(patsubst boards/%/firmware.json,%,$(wildcard boards/*/firmware.json)))

firmware: $(STAMP)
	@set -e; for b in $(FIRMWARE_BOARDS); do \
	  $(PY) -m tools.firmware $$b $(if $(MPY_DIR),--mpy-dir "$(MPY_DIR)") -j2; done

# make mcu-test [MCU_TEST_ARGS=...]: the firmware frozen into the qemu_cm3 image, run on QEMU's Cortex-M3 against
# the modem emulator and the cloud twin, both modems, every fault (host_tests/test_mcu.py, long version). Unlike
# `make test`, a missing toolchain or QEMU fails here instead of skipping.
MCU_TEST_ARGS ?=

mcu-test: $(STAMP)
	$(PY) -m tools.firmware qemu_cm3 $(if $(MPY_DIR),--mpy-dir "$(MPY_DIR)") -j2
	CELLMQTT_MCU_TEST=long $(PY) -m pytest -p no:cacheprovider host_tests/test_mcu.py $(MCU_TEST_ARGS)

bench: $(STAMP)
	$(PY) -m tools.bench

# make soak [MODEM=bg96|bc660k|bg95 (default: bg96, then bc660k)] [MINUTES=30] [SEED=1] [SOAK_ARGS=...]: the chaos soak (tools/soak.py)
MINUTES ?= 30
SEED ?= 1
SOAK_ARGS ?=
soak: $(STAMP)
	@set -e; for m in $(if $(filter command line,$(origin MODEM)),$(MODEM),bg96 bc660k); do \
	  $(PY) -m tools.soak --modem $$m --minutes $(MINUTES) --seed $(SEED) $(SOAK_ARGS); done

lint: $(STAMP)
	$(VENV)/bin/ruff check lib firmware boards tools host_tests

clean:
	rm -rf $(VENV) build .pytest_cache
