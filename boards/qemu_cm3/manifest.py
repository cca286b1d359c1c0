# Frozen-firmware manifest of the qemu_cm3 board (the project's Cortex-M3 test board: ports/qemu MPS2_AN385
# plus boards/qemu_cm3/port, built by `make firmware BOARD=qemu_cm3`): asyncio from the tarball's extmod, the
# library and app with every modem and transport (the board runs against either emulated modem), this board's
# definition and its _boot.py. Relative paths resolve against this file's folder.
# ruff: noqa: F821  (metadata, include, require, package, module, options: provided by the manifest API)
include("$(MPY_DIR)/extmod/asyncio")
include("../../manifest.py", port_manifest=False, modem=("bg96", "bc660k"), transports=("native", "socket"),
        clouds=("huawei", "enos", "mqtt"), transcript=False, opt=3)
module("board.py", opt=3)
module("board_base.py", base_path="../common", opt=3)
module("_boot.py", opt=3)
module("bench_main.py", opt=3)  # `make bench` (tools/bench/mcu.py): seeded /main.py is "import bench_main"
