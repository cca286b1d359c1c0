// qemu_cm3 (cellmqtt): the time base (CMSDK timer 0, SysTick wake-ups), the interrupt vector table, the boot sequence, the RAM disk block
// device and the semihosting clock. Our own code for the project's test board; see boards/qemu_cm3/README.md.
#include <string.h>

#include "py/mphal.h"
#include "py/runtime.h"
#include "py/mperrno.h"
#include "shared/runtime/pyexec.h"
#include "extmod/vfs.h"
#include "boards/QEMU_CM3/cm3.h"

volatile uint32_t cm3_ticks_ms;
static uint32_t cm3_boot_epoch_s;  // host time at boot (semihosting SYS_TIME), 0 when unavailable

// ---- semihosting (ARM "Semihosting for AArch32 and AArch64": SYS_TIME = 0x11, seconds since 1970)

static uint32_t cm3_semihost(uint32_t op, uint32_t arg) {
    register uint32_t r0 __asm__ ("r0") = op;
    register uint32_t r1 __asm__ ("r1") = arg;
    __asm volatile ("bkpt 0xab" : "+r" (r0) : "r" (r1) : "memory");
    return r0;
}

static uint64_t cm3_now_cycles(void);

uint32_t cm3_epoch_s(void) {
    return cm3_boot_epoch_s + (uint32_t)(cm3_now_cycles() / CM3_SYSCLK_HZ);
}

uint64_t mp_hal_time_ns(void) {
    return (uint64_t)cm3_boot_epoch_s * 1000000000ULL + cm3_now_cycles() * (1000000000ULL / CM3_SYSCLK_HZ);
}

uint32_t cm3_random_seed(void) {
    return cm3_semihost(0x11, 0) ^ (CM3_SYST_CVR << 8) ^ cm3_ticks_ms;
}

// ---- the time base. SysTick interrupts every 1 ms (CSR: ENABLE | TICKINT | CLKSOURCE = processor clock) to
// wake the CPU, but an emulator may deliver fewer interrupts than periods when the host
// is busy, so the count of time is the CMSDK APB timer 0 (0x40000000, AN385) running down from 0xffffffff at
// the 25 MHz PCLK: each reading adds the cycles since the previous one (one reading per 171 s is enough).

#define CM3_TIMER0_CTRL CM3_REG(0x40000000)
#define CM3_TIMER0_VALUE CM3_REG(0x40000004)
#define CM3_TIMER0_RELOAD CM3_REG(0x40000008)

static uint64_t cm3_cycles;
static uint32_t cm3_timer_last;

static uint64_t cm3_now_cycles(void) {
    uint32_t primask;
    __asm volatile ("mrs %0, primask\ncpsid i" : "=r" (primask) :: "memory");
    uint32_t v = CM3_TIMER0_VALUE;
    cm3_cycles += (uint32_t)(cm3_timer_last - v);
    cm3_timer_last = v;
    uint64_t c = cm3_cycles;
    __asm volatile ("msr primask, %0" :: "r" (primask) : "memory");
    return c;
}

static void cm3_systick_isr(void) {
    cm3_ticks_ms = (uint32_t)(cm3_now_cycles() / (CM3_SYSCLK_HZ / 1000));
}

mp_uint_t mp_hal_ticks_ms(void) {
    return cm3_ticks_ms = (uint32_t)(cm3_now_cycles() / (CM3_SYSCLK_HZ / 1000));
}

mp_uint_t mp_hal_ticks_us(void) {
    return (uint32_t)(cm3_now_cycles() / (CM3_SYSCLK_HZ / 1000000));
}

mp_uint_t mp_hal_ticks_cpu(void) {
    return (uint32_t)cm3_now_cycles();
}

void mp_hal_delay_ms(mp_uint_t ms) {
    uint32_t t0 = mp_hal_ticks_ms();
    while (mp_hal_ticks_ms() - t0 < ms) {
        mp_event_wait_ms(1);  // handles pending callbacks, then waits for the next interrupt
    }
}

void mp_hal_delay_us(mp_uint_t us) {
    uint32_t t0 = mp_hal_ticks_us();
    while (mp_hal_ticks_us() - t0 < us) {
    }
}

// ---- the vector table, moved to RAM (VTOR) so the board adds its interrupts without touching the start-up code

extern const uint32_t isr_vector[];
#define CM3_N_VECTORS (16 + 32)
static uint32_t cm3_vectors[CM3_N_VECTORS] __attribute__((aligned(256)));

static void cm3_uart0_rx(void) {
    cm3_uart_isr(0);  // not enabled: UART0 is the REPL, read by polling
}

static void cm3_uart1_rx(void) {
    cm3_uart_isr(1);
}

static void cm3_uart2_rx(void) {
    cm3_uart_isr(2);
}

static void cm3_uart_ovf(void) {
    cm3_uart_isr(-1);  // the shared overflow interrupt: let each UART count and clear its overrun
}

void cm3_board_init(void) {
    memcpy(cm3_vectors, isr_vector, 16 * sizeof(uint32_t));
    for (int i = 16; i < CM3_N_VECTORS; ++i) {
        cm3_vectors[i] = isr_vector[3];  // HardFault: an interrupt nobody enabled
    }
    cm3_vectors[2] = (uint32_t)cm3_wdt_nmi;  // the watchdog's first expiry (AN385: its interrupt is the NMI)
    cm3_vectors[15] = (uint32_t)cm3_systick_isr;
    cm3_vectors[16 + CM3_IRQ_UART_RX(0)] = (uint32_t)cm3_uart0_rx;
    cm3_vectors[16 + CM3_IRQ_UART_RX(1)] = (uint32_t)cm3_uart1_rx;
    cm3_vectors[16 + CM3_IRQ_UART_RX(2)] = (uint32_t)cm3_uart2_rx;
    cm3_vectors[16 + CM3_IRQ_UART_OVF] = (uint32_t)cm3_uart_ovf;
    __asm volatile ("dsb");
    CM3_SCB_VTOR = (uint32_t)cm3_vectors;
    __asm volatile ("dsb\nisb");

    void cm3_reset_init(void);
    cm3_reset_init();
    cm3_boot_epoch_s = cm3_semihost(0x11, 0);
    if (cm3_boot_epoch_s == 0xffffffff) {
        cm3_boot_epoch_s = 0;
    }
    CM3_TIMER0_CTRL = 0;
    CM3_TIMER0_RELOAD = 0xffffffff;
    CM3_TIMER0_VALUE = 0xffffffff;
    cm3_timer_last = 0xffffffff;
    CM3_TIMER0_CTRL = 1;  // enable, no interrupt
    CM3_SYST_RVR = CM3_SYSCLK_HZ / 1000 - 1;
    CM3_SYST_CVR = 0;
    CM3_SYST_CSR = 7;
}

// ---- boot: _boot.py (frozen: mounts the RAM disk, copies seeded files), then /main.py from the filesystem

void cm3_board_run_boot(void) {
    pyexec_frozen_module("_boot.py", false);
    if (pyexec_mode_kind == PYEXEC_MODE_FRIENDLY_REPL) {
        pyexec_file_if_exists("main.py");
    }
}

// ---- cm3.Disk: the block device of the RAM disk (the extended block protocol of os.AbstractBlockDev)

typedef struct {
    mp_obj_base_t base;
} cm3_disk_obj_t;

static const mp_obj_type_t cm3_disk_type;
static const cm3_disk_obj_t cm3_disk_obj = {{&cm3_disk_type}};

static mp_obj_t cm3_disk_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 0, 0, false);
    return MP_OBJ_FROM_PTR(&cm3_disk_obj);
}

static uint8_t *cm3_disk_at(mp_obj_t block, mp_obj_t off, size_t len) {
    mp_uint_t addr = mp_obj_get_int(block) * CM3_DISK_BLOCK_SIZE + mp_obj_get_int(off);
    if (addr + len > CM3_DISK_BLOCK_SIZE * CM3_DISK_BLOCKS) {
        mp_raise_OSError(MP_EIO);
    }
    return (uint8_t *)(CM3_DISK_ADDR + addr);
}

static mp_obj_t cm3_disk_readblocks(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(args[2], &b, MP_BUFFER_WRITE);
    memcpy(b.buf, cm3_disk_at(args[1], n_args > 3 ? args[3] : MP_OBJ_NEW_SMALL_INT(0), b.len), b.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(cm3_disk_readblocks_obj, 3, 4, cm3_disk_readblocks);

static mp_obj_t cm3_disk_writeblocks(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(args[2], &b, MP_BUFFER_READ);
    memcpy(cm3_disk_at(args[1], n_args > 3 ? args[3] : MP_OBJ_NEW_SMALL_INT(0), b.len), b.buf, b.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(cm3_disk_writeblocks_obj, 3, 4, cm3_disk_writeblocks);

static mp_obj_t cm3_disk_ioctl(mp_obj_t self, mp_obj_t op_in, mp_obj_t arg) {
    switch (mp_obj_get_int(op_in)) {
        case MP_BLOCKDEV_IOCTL_BLOCK_COUNT:
            return MP_OBJ_NEW_SMALL_INT(CM3_DISK_BLOCKS);
        case MP_BLOCKDEV_IOCTL_BLOCK_SIZE:
            return MP_OBJ_NEW_SMALL_INT(CM3_DISK_BLOCK_SIZE);
        case MP_BLOCKDEV_IOCTL_BLOCK_ERASE:
            memset(cm3_disk_at(arg, MP_OBJ_NEW_SMALL_INT(0), CM3_DISK_BLOCK_SIZE), 0xff, CM3_DISK_BLOCK_SIZE);
            return MP_OBJ_NEW_SMALL_INT(0);
        default:  // INIT, DEINIT, SYNC: nothing to do for RAM
            return MP_OBJ_NEW_SMALL_INT(0);
    }
}
static MP_DEFINE_CONST_FUN_OBJ_3(cm3_disk_ioctl_obj, cm3_disk_ioctl);

static const mp_rom_map_elem_t cm3_disk_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readblocks), MP_ROM_PTR(&cm3_disk_readblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_writeblocks), MP_ROM_PTR(&cm3_disk_writeblocks_obj) },
    { MP_ROM_QSTR(MP_QSTR_ioctl), MP_ROM_PTR(&cm3_disk_ioctl_obj) },
};
static MP_DEFINE_CONST_DICT(cm3_disk_locals, cm3_disk_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(cm3_disk_type, MP_QSTR_Disk, MP_TYPE_FLAG_NONE,
    make_new, cm3_disk_make_new, locals_dict, &cm3_disk_locals);

static mp_obj_t cm3_reset_cause_obj_fn(void) {
    return MP_OBJ_NEW_SMALL_INT(cm3_reset_cause());
}
static MP_DEFINE_CONST_FUN_OBJ_0(cm3_reset_cause_obj, cm3_reset_cause_obj_fn);

static const mp_rom_map_elem_t cm3_module_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_cm3) },
    { MP_ROM_QSTR(MP_QSTR_Disk), MP_ROM_PTR(&cm3_disk_type) },
    { MP_ROM_QSTR(MP_QSTR_SEED_ADDR), MP_ROM_INT(CM3_SEED_ADDR) },
    { MP_ROM_QSTR(MP_QSTR_SEED_MAX), MP_ROM_INT(CM3_SEED_MAX) },
    { MP_ROM_QSTR(MP_QSTR_HEAP_SIZE), MP_ROM_INT(MICROPY_HEAP_SIZE) },
    { MP_ROM_QSTR(MP_QSTR_reset_cause), MP_ROM_PTR(&cm3_reset_cause_obj) },
};
static MP_DEFINE_CONST_DICT(cm3_module_globals, cm3_module_table);

const mp_obj_module_t cm3_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&cm3_module_globals,
};
MP_REGISTER_MODULE(MP_QSTR_cm3, cm3_module);

// ---- resets: SCB AIRCR SYSRESETREQ (ARMv7-M ARM B3.2.6); the cause is kept in SSRAM2/3 across the reset

#define CM3_RESET_MAGIC (0xc3c30000)
static uint32_t cm3_last_reset = 1;  // PWRON_RESET

uint32_t cm3_reset_cause(void) {
    return cm3_last_reset;
}

MP_NORETURN void cm3_system_reset(uint32_t cause) {
    CM3_REG(CM3_RESET_WORD_ADDR) = CM3_RESET_MAGIC | cause;
    __asm volatile ("dsb");
    CM3_SCB_AIRCR = (0x05fa << 16) | (1 << 2);
    __asm volatile ("dsb");
    for (;;) {
    }
}

void cm3_set_reset_cause(uint32_t cause) {
    CM3_REG(CM3_RESET_WORD_ADDR) = CM3_RESET_MAGIC | cause;
}

void cm3_reset_init(void) {
    uint32_t w = CM3_REG(CM3_RESET_WORD_ADDR);
    cm3_last_reset = (w & 0xffff0000) == CM3_RESET_MAGIC ? (w & 0xff) : 1;
    CM3_REG(CM3_RESET_WORD_ADDR) = CM3_RESET_MAGIC | 2;  // a reset nobody announced: HARD_RESET
}
