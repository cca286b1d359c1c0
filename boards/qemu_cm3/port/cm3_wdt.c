// qemu_cm3 (cellmqtt): machine.WDT on the CMSDK APB watchdog of the MPS2 AN385 (0x40008000; included by
// extmod/machine_wdt.c). Registers (ARM CMSDK TRM, DDI 0479, "APB watchdog"): LOAD 0x000, VALUE 0x004, CONTROL
// 0x008 (bit0 INTEN, bit1 RESEN), INTCLR 0x00C (a write clears the interrupt and reloads the counter), LOCK
// 0xC00 (0x1ACCE551 unlocks the registers). The counter runs down at WDOGCLK (25 MHz on AN385); at zero it
// raises its interrupt (the NMI on AN385) and reloads; at zero again with the interrupt still set it resets the
// system. So LOAD is half the timeout; feeding writes INTCLR. Once started it cannot be stopped.
#include "boards/QEMU_CM3/cm3.h"

#define CM3_WDOG_BASE (0x40008000)
#define CM3_WDOG_LOAD CM3_REG(CM3_WDOG_BASE + 0x000)
#define CM3_WDOG_CONTROL CM3_REG(CM3_WDOG_BASE + 0x008)
#define CM3_WDOG_INTCLR CM3_REG(CM3_WDOG_BASE + 0x00c)
#define CM3_WDOG_LOCK CM3_REG(CM3_WDOG_BASE + 0xc00)
#define CM3_WDOG_UNLOCK (0x1acce551)
#define CM3_WDOG_MAX_MS (2 * (0xffffffffu / (CM3_SYSCLK_HZ / 1000)))  // ~343 s

struct _machine_wdt_obj_t {
    mp_obj_base_t base;
};

static machine_wdt_obj_t cm3_wdt_obj = {{&machine_wdt_type}};

// the watchdog's first expiry (the NMI): unless the program feeds it now, the reset follows; say why beforehand
void cm3_wdt_nmi(void) {
    cm3_set_reset_cause(3);  // WDT_RESET
}

static void cm3_wdt_kick(void) {
    CM3_WDOG_LOCK = CM3_WDOG_UNLOCK;
    CM3_WDOG_INTCLR = 1;
    CM3_WDOG_LOCK = 0;
    cm3_set_reset_cause(2);  // a reset nobody announced is a HARD_RESET again
}

static machine_wdt_obj_t *mp_machine_wdt_make_new_instance(mp_int_t id, mp_int_t timeout_ms) {
    if (id != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("WDT(0) only"));
    }
    if (timeout_ms < 2 || (mp_uint_t)timeout_ms > CM3_WDOG_MAX_MS) {
        mp_raise_ValueError(MP_ERROR_TEXT("timeout: 2..343000 ms"));
    }
    // a second WDT() changes the timeout, as on the STM32 (the watchdog stays on)
    CM3_WDOG_LOCK = CM3_WDOG_UNLOCK;
    CM3_WDOG_LOAD = (uint32_t)timeout_ms / 2 * (CM3_SYSCLK_HZ / 1000);
    CM3_WDOG_INTCLR = 1;
    CM3_WDOG_CONTROL = 3;  // INTEN | RESEN
    CM3_WDOG_LOCK = 0;
    return &cm3_wdt_obj;
}

static void mp_machine_wdt_feed(machine_wdt_obj_t *self) {
    (void)self;
    cm3_wdt_kick();
}
