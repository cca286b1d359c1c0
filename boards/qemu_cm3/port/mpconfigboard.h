// qemu_cm3 (cellmqtt): what this board adds to ports/qemu's configuration (included first by mpconfigport.h
// through the project's patch; see boards/qemu_cm3/README.md).
#define MICROPY_HW_BOARD_NAME_CM3 "qemu_cm3"

#define MICROPY_PY_SELECT (1)
#define MICROPY_PY_TIME (1)
#define MICROPY_PY_TIME_GMTIME_LOCALTIME_MKTIME (1)
#define MICROPY_PY_TIME_TIME_TIME_NS (1)
#define MICROPY_PY_TIME_INCLUDEFILE "boards/QEMU_CM3/cm3_time.c"
#define MICROPY_EPOCH_IS_1970 (1)
#define MICROPY_TIMESTAMP_IMPL (1)  // MICROPY_TIMESTAMP_IMPL_UINT: 32-bit seconds, no 64-bit division (libgcc)
#define MICROPY_PY_ASYNCIO (1)
#define MICROPY_PY_OS_SYNC (1)
#define MICROPY_SSL_MBEDTLS (1)  // for hashlib only: the hash files of mbed TLS (mpconfigboard.mk)
#define MICROPY_PY_HASHLIB_SHA1 (1)
#define MICROPY_PY_HASHLIB_MD5 (1)
#define MICROPY_PY_CRYPTOLIB (0)
#define MICROPY_PY_MACHINE_INCLUDEFILE "boards/QEMU_CM3/cm3_machine.c"
#define MICROPY_PY_MACHINE_UART (1)
#define MICROPY_PY_MACHINE_UART_INCLUDEFILE "boards/QEMU_CM3/cm3_uart.c"
#define MICROPY_PY_MACHINE_WDT (1)
#define MICROPY_PY_MACHINE_WDT_INCLUDEFILE "boards/QEMU_CM3/cm3_wdt.c"
#define MICROPY_PY_MACHINE_EXTRA_GLOBALS \
    { MP_ROM_QSTR(MP_QSTR_PWRON_RESET), MP_ROM_INT(1) }, \
    { MP_ROM_QSTR(MP_QSTR_WDT_RESET), MP_ROM_INT(3) }, \
    { MP_ROM_QSTR(MP_QSTR_SOFT_RESET), MP_ROM_INT(5) },
#define MICROPY_PY_RANDOM_SEED_INIT_FUNC (cm3_random_seed())
#define MICROPY_MODULE_BUILTIN_INIT (1)

// asyncio's poll loop and sleep_ms sleep until the next interrupt: SysTick (1 ms) or a UART byte
#define MICROPY_INTERNAL_WFE(TIMEOUT_MS) __asm volatile ("wfi")

#define MICROPY_BOARD_INIT cm3_board_init
#define MICROPY_BOARD_RUN_BOOT cm3_board_run_boot

#include <stdint.h>
uint32_t cm3_random_seed(void);
void cm3_board_init(void);
void cm3_board_run_boot(void);
