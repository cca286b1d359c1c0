# qemu_cm3 (cellmqtt): ports/qemu's MPS2_AN385 (Cortex-M3) plus the project's board layer. tools/firmware.py
# copies this folder to ports/qemu/boards/QEMU_CM3 of an unpacked tree and applies qemu-port.patch.
QEMU_ARCH = arm
QEMU_MACHINE = mps2-an385

CFLAGS += -mthumb -mcpu=cortex-m3 -mfloat-abi=soft
CFLAGS += -DQEMU_SOC_MPS2
CFLAGS += -DMICROPY_HW_MCU_NAME='"Cortex-M3"'
CFLAGS += -DMICROPY_BOARD_CONFIG_HEADER='"boards/QEMU_CM3/mpconfigboard.h"'

LDSCRIPT = mcu/arm/mps2.ld

SRC_BOARD_O = shared/runtime/gchelper_native.o shared/runtime/gchelper_thumb2.o
SRC_C += boards/QEMU_CM3/cm3_hal.c shared/timeutils/timeutils.c

MPY_CROSS_FLAGS += -march=armv7m

# the issue's budget: the firmware runs in a 64 KB heap
MICROPY_HEAP_SIZE = 65536
MICROPY_VFS_LFS2 = 1

# hashlib's SHA-1 (and SHA-256, MD5) from mbed TLS -- the hash files only (lib/mbedtls from Debian's mbedtls
# source, firmware.json "mbedtls"); the ssl module stays off
CFLAGS += -I$(TOP)/lib/mbedtls/include -DMBEDTLS_CONFIG_FILE='"boards/QEMU_CM3/mbedtls_config_board.h"'
SRC_C += $(addprefix lib/mbedtls/library/,sha1.c sha256.c md5.c platform_util.c)

# the files extmod includes (machine.UART, machine.WDT, machine, time): scanned for their qstrs
SRC_QSTR += boards/QEMU_CM3/cm3_uart.c boards/QEMU_CM3/cm3_wdt.c boards/QEMU_CM3/cm3_machine.c boards/QEMU_CM3/cm3_time.c
