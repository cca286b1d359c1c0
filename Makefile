# Set-up and entry points. Everything runs from .venv, built from the pinned requirements.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv test demo bench lint clean run firmware mcu-test

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

lint: $(STAMP)
	$(VENV)/bin/ruff check lib firmware boards tools host_tests

clean:
	rm -rf $(VENV) build .pytest_cache
