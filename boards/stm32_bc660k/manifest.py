# Frozen-firmware manifest of the STM32 (NUCLEO-F429ZI) + BC660K-GL board: the port's own modules (asyncio
# among them), then the library and app for a BC660K-GL (native MQTT only; Huawei and EnOS), then this board's
# definition. The stm32 port reads FROZEN_MANIFEST (its Makefile has `FROZEN_MANIFEST ?= boards/manifest.py`):
#   make -C ports/stm32 BOARD=NUCLEO_F429ZI FROZEN_MANIFEST=/abs/path/to/boards/stm32_bc660k/manifest.py
# or, in a custom board's mpconfigboard.mk:  FROZEN_MANIFEST ?= $(BOARD_DIR)/manifest.py
# Relative paths resolve against this file's folder. Sizes: python -m tools.frozen_size stm32_bc660k
# ruff: noqa: F821  (metadata, include, require, package, module, options: provided by the manifest API)
include("$(PORT_DIR)/boards/manifest.py")
include("../../manifest.py", port_manifest=False, modem="bc660k", transports=("native",),
        clouds=("huawei", "enos"), transcript=False, opt=3)
require("hmac")  # also required by the root manifest; listed here so the board's needs read in one place
module("board.py", opt=3)
module("board_base.py", base_path="../common", opt=3)
