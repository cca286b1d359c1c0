// qemu_cm3 (cellmqtt): the port half of the machine module (included by extmod/modmachine.c).
#include "boards/QEMU_CM3/cm3.h"

static void mp_machine_idle(void) {
    __asm volatile ("wfi");  // until the next interrupt (SysTick at the latest)
}

static void mp_machine_reset(void) {
    cm3_system_reset(5);  // SOFT_RESET; the RAM disk survives, like a board's flash
}

static mp_int_t mp_machine_reset_cause(void) {
    return cm3_reset_cause();
}
