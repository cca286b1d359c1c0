# Out-of-tree MicroPython board definition (ESP32-WROOM-32 + BG96) for the esp32 port, MicroPython 1.29:
#   make -C ports/esp32 BOARD_DIR=/abs/path/to/boards/esp32_bg96
# Same chip settings as the port's ESP32_GENERIC; the frozen manifest is this board's. A FROZEN_MANIFEST=
# on the make command line still takes precedence (the port saves it before including this file).
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    boards/sdkconfig.ble
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
