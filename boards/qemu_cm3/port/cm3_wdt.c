// qemu_cm3 (cellmqtt): machine.WDT stand-in (included by extmod/machine_wdt.c). The MPS2 has a CMSDK
// watchdog, but QEMU 7.2's mps2-an385 does not model it (inferred from its absence in QEMU's mps2.c), so
// SysTick counts: not fed within the timeout -> a system reset with reset_cause() WDT_RESET (3).
#include "boards/QEMU_CM3/cm3.h"

struct _machine_wdt_obj_t {
    mp_obj_base_t base;
};

static machine_wdt_obj_t cm3_wdt_obj = {{&machine_wdt_type}};
static volatile uint32_t cm3_wdt_timeout_ms;  // 0: not started
static volatile uint32_t cm3_wdt_fed_ms;

void cm3_wdt_tick(void) {
    if (cm3_wdt_timeout_ms && cm3_ticks_ms - cm3_wdt_fed_ms > cm3_wdt_timeout_ms) {
        cm3_system_reset(3);
    }
}

static machine_wdt_obj_t *mp_machine_wdt_make_new_instance(mp_int_t id, mp_int_t timeout_ms) {
    if (id != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("WDT(0) only"));
    }
    if (timeout_ms < 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("timeout"));
    }
    // once started a watchdog cannot be stopped; a second WDT() only changes the timeout, as on the STM32
    cm3_wdt_fed_ms = mp_hal_ticks_ms();
    cm3_wdt_timeout_ms = timeout_ms;
    return &cm3_wdt_obj;
}

static void mp_machine_wdt_feed(machine_wdt_obj_t *self) {
    (void)self;
    cm3_wdt_fed_ms = mp_hal_ticks_ms();
}
