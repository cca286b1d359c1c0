// Out-of-tree board (boards/esp32_bg96/mpconfigboard.cmake): names shown by the REPL banner and os.uname().
#define MICROPY_HW_BOARD_NAME "ESP32 + Quectel BG96 (cellmqtt)"
#define MICROPY_HW_MCU_NAME "ESP32"
