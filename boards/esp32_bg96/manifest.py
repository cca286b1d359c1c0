# Frozen-firmware manifest of the ESP32 + BG96 board: the port's own modules (asyncio among them), then the
# library and app for a BG96 (native MQTT only; Huawei and EnOS), then this board's definition.
#   make -C ports/esp32 BOARD_DIR=/abs/path/to/boards/esp32_bg96             (mpconfigboard.cmake points here)
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/to/boards/esp32_bg96/manifest.py
# Relative paths resolve against this file's folder. Sizes: python -m tools.frozen_size esp32_bg96
# ruff: noqa: F821  (metadata, include, require, package, module, options: provided by the manifest API)
include("$(PORT_DIR)/boards/manifest.py")
include("../../manifest.py", port_manifest=False, modem="bg96", transports=("native",), clouds=("huawei", "enos"),
        transcript=False, opt=3)
require("hmac")  # also required by the root manifest; listed here so the board's needs read in one place
module("board.py", opt=3)
module("board_base.py", base_path="../common", opt=3)
