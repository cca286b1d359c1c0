// qemu_cm3: the Cortex-M3 (MPS2 AN385) board's hardware layer, shared by cm3_hal.c, cm3_uart.c, cm3_machine.c.
// Register addresses: ARM Cortex-M3 Technical Reference Manual / ARMv7-M ARM (SysTick, SCB, NVIC) and the MPS2
// AN385 application note (memory map, UARTs, interrupt numbers). See boards/qemu_cm3/README.md.
#ifndef CELLMQTT_QEMU_CM3_H
#define CELLMQTT_QEMU_CM3_H

#include <stdint.h>
#include "py/mpconfig.h"

#define CM3_SYSCLK_HZ (25000000)  // AN385: 25 MHz system clock (also QEMU mps2.c SYSCLK_FRQ)

#define CM3_REG(addr) (*(volatile uint32_t *)(addr))
// ARMv7-M system control space
#define CM3_SYST_CSR CM3_REG(0xE000E010)
#define CM3_SYST_RVR CM3_REG(0xE000E014)
#define CM3_SYST_CVR CM3_REG(0xE000E018)
#define CM3_NVIC_ISER0 CM3_REG(0xE000E100)
#define CM3_NVIC_ICER0 CM3_REG(0xE000E180)
#define CM3_SCB_VTOR CM3_REG(0xE000ED08)
#define CM3_SCB_AIRCR CM3_REG(0xE000ED0C)

// AN385 interrupt numbers: UARTn RX = 2n, TX = 2n + 1 (n = 0..2); the UART overflow interrupts share IRQ 12
#define CM3_IRQ_UART_RX(n) (2 * (n))
#define CM3_IRQ_UART_OVF (12)

// SSRAM2/3 (0x20000000, 4 MB on AN385): not part of the loaded image and not cleared by the start-up code,
// so what is kept there survives machine.reset() (a system reset) as a board's flash would.
#define CM3_DISK_ADDR (0x20000000)
#define CM3_DISK_BLOCK_SIZE (4096)
#define CM3_DISK_BLOCKS (256)  // 1 MB
#define CM3_SEED_ADDR (0x20200000)  // files placed by tools/qemu_cm3.py (-device loader), copied by _boot.py
#define CM3_SEED_MAX (0x00100000)
#define CM3_RESET_WORD_ADDR (0x203FFFF0)  // why the last reset happened (magic | cause)

extern volatile uint32_t cm3_ticks_ms;
void cm3_board_init(void);
void cm3_board_run_boot(void);
void cm3_uart_isr(int n);
void cm3_wdt_nmi(void);
void cm3_set_reset_cause(uint32_t cause);
MP_NORETURN void cm3_system_reset(uint32_t cause);
uint32_t cm3_reset_cause(void);

#endif
