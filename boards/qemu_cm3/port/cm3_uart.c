// qemu_cm3 (cellmqtt): machine.UART on the CMSDK APB UARTs of the MPS2 AN385 (included by extmod/machine_uart.c).
// Registers (ARM CoreLink CMSDK APB UART, DDI 0479): DATA 0x00, STATE 0x04 (bit0 TX full, bit1 RX full, bit2/3
// TX/RX overrun), CTRL 0x08 (bit0 TX en, bit1 RX en, bit2 TX int, bit3 RX int, bit5 RX overrun int), INTSTATUS /
// INTCLEAR 0x0C (bit1 RX, bit3 RX overrun), BAUDDIV 0x10 (>= 16). AN385: UART0..2 at 0x40004000 + 0x1000 * n.
// The RX register holds one byte, so reception is interrupt-driven into a ring buffer; the stream reads the ring.
// rxidle=MS: poll() reports "readable" only once the line has been quiet MS milliseconds (or the ring is half
// full), so one read takes a whole modem reply instead of its first few bytes.
#include <string.h>

#include "py/mperrno.h"
#include "py/stream.h"
#include "boards/QEMU_CM3/cm3.h"

#define CM3_UART_BASE(n) (0x40004000 + 0x1000 * (n))
#define CM3_UART_DATA(n) CM3_REG(CM3_UART_BASE(n) + 0x00)
#define CM3_UART_STATE(n) CM3_REG(CM3_UART_BASE(n) + 0x04)
#define CM3_UART_CTRL(n) CM3_REG(CM3_UART_BASE(n) + 0x08)
#define CM3_UART_INT(n) CM3_REG(CM3_UART_BASE(n) + 0x0c)
#define CM3_UART_BAUDDIV(n) CM3_REG(CM3_UART_BASE(n) + 0x10)
#define STATE_TXFULL (1 << 0)
#define STATE_RXFULL (1 << 1)
#define STATE_RXOVR (1 << 3)
#define CTRL_TXEN (1 << 0)
#define CTRL_RXEN (1 << 1)
#define CTRL_RXINT (1 << 3)
#define CTRL_RXOVRINT (1 << 5)
#define INT_RX (1 << 1)
#define INT_RXOVR (1 << 3)

#define CM3_UART_FIRST (1)  // UART0 is the REPL
#define CM3_UART_LAST (2)
#define CM3_UART_RXBUF_MAX (4096)

struct _machine_uart_obj_t {
    mp_obj_base_t base;
    uint8_t id;
    uint8_t on;
    uint32_t baudrate;
    uint16_t timeout;  // ms to wait for the first byte of a read
    uint16_t timeout_char;  // ms to wait for each further byte
    uint16_t rxidle;  // ms of a quiet line before poll() says readable (0: at once)
    uint16_t rxbuf;  // ring capacity in use (<= CM3_UART_RXBUF_MAX)
    volatile uint16_t head;  // written by the interrupt
    volatile uint16_t tail;  // written by the reader
    volatile uint32_t last_rx_ms;
    volatile uint32_t dropped;  // bytes lost: ring full, or a hardware overrun
    uint8_t ring[CM3_UART_RXBUF_MAX];
};

static machine_uart_obj_t cm3_uarts[CM3_UART_LAST - CM3_UART_FIRST + 1];

static inline size_t cm3_uart_avail(machine_uart_obj_t *u) {
    return (uint16_t)(u->head - u->tail + u->rxbuf) % u->rxbuf;
}

void cm3_uart_isr(int n) {
    for (int i = CM3_UART_FIRST; i <= CM3_UART_LAST; ++i) {
        machine_uart_obj_t *u = &cm3_uarts[i - CM3_UART_FIRST];
        if ((n >= 0 && n != i) || !u->on) {
            continue;
        }
        CM3_UART_INT(i) = INT_RX | INT_RXOVR;  // clear first: a byte arriving after the drain interrupts again
        if (CM3_UART_STATE(i) & STATE_RXOVR) {
            CM3_UART_STATE(i) = STATE_RXOVR;
            u->dropped += 1;
        }
        while (CM3_UART_STATE(i) & STATE_RXFULL) {
            uint8_t c = CM3_UART_DATA(i);
            uint16_t next = (u->head + 1) % u->rxbuf;
            if (next == u->tail) {
                u->dropped += 1;
            } else {
                u->ring[u->head] = c;
                u->head = next;
            }
        }
        u->last_rx_ms = mp_hal_ticks_ms();
    }
}

#define MICROPY_PY_MACHINE_UART_CLASS_CONSTANTS

static void mp_machine_uart_print(const mp_print_t *print, mp_obj_t self_in, mp_print_kind_t kind) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_printf(print, "UART(%u, baudrate=%u, timeout=%u, timeout_char=%u, rxbuf=%u, rxidle=%u)", self->id,
        (unsigned)self->baudrate, self->timeout, self->timeout_char, self->rxbuf, self->rxidle);
}

static void mp_machine_uart_init_helper(machine_uart_obj_t *self, size_t n_args, const mp_obj_t *pos_args,
    mp_map_t *kw_args) {
    enum { ARG_baudrate, ARG_bits, ARG_parity, ARG_stop, ARG_timeout, ARG_timeout_char, ARG_rxbuf, ARG_txbuf,
           ARG_rxidle };
    static const mp_arg_t allowed_args[] = {
        { MP_QSTR_baudrate, MP_ARG_INT, {.u_int = 115200} },
        { MP_QSTR_bits, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 8} },
        { MP_QSTR_parity, MP_ARG_KW_ONLY | MP_ARG_OBJ, {.u_rom_obj = MP_ROM_NONE} },
        { MP_QSTR_stop, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 1} },
        { MP_QSTR_timeout, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_timeout_char, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },
        { MP_QSTR_rxbuf, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 1024} },
        { MP_QSTR_txbuf, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },  // accepted; TX writes the register
        { MP_QSTR_rxidle, MP_ARG_KW_ONLY | MP_ARG_INT, {.u_int = 0} },
    };
    mp_arg_val_t args[MP_ARRAY_SIZE(allowed_args)];
    mp_arg_parse_all(n_args, pos_args, kw_args, MP_ARRAY_SIZE(allowed_args), allowed_args, args);
    mp_int_t baud = args[ARG_baudrate].u_int;
    uint32_t div = baud > 0 ? CM3_SYSCLK_HZ / baud : 0;
    if (div < 16 || div > 0xfffff) {  // the UART needs BAUDDIV >= 16
        mp_raise_ValueError(MP_ERROR_TEXT("baudrate"));
    }
    if (args[ARG_bits].u_int != 8 || args[ARG_parity].u_obj != mp_const_none || args[ARG_stop].u_int != 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("the CMSDK UART is 8N1 only"));
    }
    mp_int_t rxbuf = args[ARG_rxbuf].u_int;
    if (rxbuf < 16 || rxbuf > CM3_UART_RXBUF_MAX) {
        mp_raise_ValueError(MP_ERROR_TEXT("rxbuf: 16..4096"));
    }
    int n = self->id;
    CM3_UART_CTRL(n) = 0;
    CM3_NVIC_ICER0 = 1 << CM3_IRQ_UART_RX(n);
    self->on = 0;
    self->baudrate = baud;
    self->timeout = args[ARG_timeout].u_int;
    self->timeout_char = args[ARG_timeout_char].u_int;
    self->rxidle = args[ARG_rxidle].u_int;
    self->rxbuf = rxbuf;
    self->head = self->tail = 0;
    self->dropped = 0;
    self->last_rx_ms = mp_hal_ticks_ms();
    while (CM3_UART_STATE(n) & STATE_RXFULL) {
        (void)CM3_UART_DATA(n);  // what arrived before: not this session's
    }
    CM3_UART_BAUDDIV(n) = div;
    CM3_UART_INT(n) = INT_RX | INT_RXOVR;
    self->on = 1;
    CM3_UART_CTRL(n) = CTRL_TXEN | CTRL_RXEN | CTRL_RXINT | CTRL_RXOVRINT;
    CM3_NVIC_ISER0 = (1 << CM3_IRQ_UART_RX(n)) | (1 << CM3_IRQ_UART_OVF);
}

static mp_obj_t mp_machine_uart_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, MP_OBJ_FUN_ARGS_MAX, true);
    mp_int_t id = mp_obj_get_int(args[0]);
    if (id < CM3_UART_FIRST || id > CM3_UART_LAST) {
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("UART(%d) doesn't exist (1..2; 0 is the REPL)"), id);
    }
    machine_uart_obj_t *self = &cm3_uarts[id - CM3_UART_FIRST];
    self->base.type = &machine_uart_type;
    self->id = id;
    mp_map_t kw_args;
    mp_map_init_fixed_table(&kw_args, n_kw, args + n_args);
    mp_machine_uart_init_helper(self, n_args - 1, args + 1, &kw_args);
    return MP_OBJ_FROM_PTR(self);
}

static void mp_machine_uart_deinit(machine_uart_obj_t *self) {
    CM3_UART_CTRL(self->id) = 0;
    CM3_NVIC_ICER0 = 1 << CM3_IRQ_UART_RX(self->id);
    self->on = 0;
}

static mp_int_t mp_machine_uart_any(machine_uart_obj_t *self) {
    return cm3_uart_avail(self);
}

static bool mp_machine_uart_txdone(machine_uart_obj_t *self) {
    return !(CM3_UART_STATE(self->id) & STATE_TXFULL);
}

// wait up to ms for a byte in the ring (sleeping between interrupts); true when there is one
static bool cm3_uart_wait(machine_uart_obj_t *self, uint32_t ms) {
    uint32_t t0 = mp_hal_ticks_ms();
    while (!cm3_uart_avail(self)) {
        if (mp_hal_ticks_ms() - t0 >= ms) {
            return false;
        }
        mp_event_wait_ms(1);
    }
    return true;
}

static mp_uint_t mp_machine_uart_read(mp_obj_t self_in, void *buf_in, mp_uint_t size, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    uint8_t *buf = buf_in;
    mp_uint_t got = 0;
    if (size == 0) {
        return 0;
    }
    if (!cm3_uart_wait(self, self->timeout)) {
        *errcode = MP_EAGAIN;
        return MP_STREAM_ERROR;
    }
    while (got < size) {
        uint16_t tail = self->tail;
        if (tail == self->head && !cm3_uart_wait(self, self->timeout_char)) {
            break;
        }
        buf[got++] = self->ring[tail];
        self->tail = (tail + 1) % self->rxbuf;
    }
    return got;
}

static mp_uint_t mp_machine_uart_write(mp_obj_t self_in, const void *buf_in, mp_uint_t size, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    const uint8_t *buf = buf_in;
    for (mp_uint_t i = 0; i < size; ++i) {
        while (CM3_UART_STATE(self->id) & STATE_TXFULL) {
        }
        CM3_UART_DATA(self->id) = buf[i];
    }
    return size;
}

static mp_uint_t mp_machine_uart_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    machine_uart_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (request == MP_STREAM_POLL) {
        mp_uint_t ret = 0;
        size_t n = cm3_uart_avail(self);
        if ((arg & MP_STREAM_POLL_RD) && n
            && (self->rxidle == 0 || n >= self->rxbuf / 2 || mp_hal_ticks_ms() - self->last_rx_ms >= self->rxidle)) {
            ret |= MP_STREAM_POLL_RD;
        }
        if (arg & MP_STREAM_POLL_WR) {
            ret |= MP_STREAM_POLL_WR;
        }
        return ret;
    } else if (request == MP_STREAM_FLUSH) {
        while (CM3_UART_STATE(self->id) & STATE_TXFULL) {
        }
        return 0;
    }
    *errcode = MP_EINVAL;
    return MP_STREAM_ERROR;
}
