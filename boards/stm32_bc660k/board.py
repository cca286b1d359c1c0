# Board: ST NUCLEO-F429ZI (MicroPython NUCLEO_F429ZI, 1.29) driving a Quectel BC660K-GL (NB-IoT).
# On the device this file is /board.py (tools/deploy.py) or frozen as `board` (boards/stm32_bc660k/manifest.py);
# firmware/app/main.py builds Board(cfg) from it. Wiring and every constant: docs/boards.md.
#
# BC660K-GL I/O runs at 3.3 V when its VIO_SEL pin is tied to GND (1.8 V when left open): with VIO_SEL = GND
# the UART connects directly. PWRKEY and RESET_N are driven through NPN transistors, so MCU high = line low.
#
# UNVERIFIED: the BC660K-GL Hardware Design was not available to us. The module powers up by itself when VBAT
# is applied (Quectel support); the PWRKEY and RESET_N pulse widths below follow the BC66 family and are
# chosen long on purpose (these pins have no upper bound there). Check them against the module's manual.
from board_base import McuBoard
from micropython import const

NAME = "stm32_bc660k"  # config.json "board"
MODEM = "bc660k"  # config.json "modem.type"

# USART2 on PD5 (TX) / PD6 (RX), Zio connector CN9; USART3 is the ST-LINK virtual COM port (the REPL).
_UART_ID = const(2)
_RXBUF = const(2048)  # the default 64 bytes would drop a +QMTRECV; 2 KB holds one plus a burst of URCs

_PWRKEY = "PF13"  # Arduino D7 -> NPN base -> BC660K-GL PWRKEY
_RESET = "PF12"  # Arduino D8 -> NPN base -> BC660K-GL RESET_N

_PWRKEY_ON_MS = const(800)  # UNVERIFIED: BC66 family "low >= 500 ms" to power on (after AT+QPOWD)
_RESET_MS = const(300)  # UNVERIFIED: BC66 family "low >= 50 ms"
_SETTLE_MS = const(6000)  # cold boot prints RDY ~6 s after a hardware reset (quectel-bc660k.md)
# STM32 IWDG: 12-bit reload, prescaler 256, LSI ~32 kHz -> at most ~32.7 s; longer app timeouts are extended
# in software (board_base._LongWatchdog)
_WDT_MAX_MS = const(32000)


async def _mcu_temp(app):
    import pyb

    # die temperature from the internal sensor (ADC1 channel 16/18, factory calibration where the chip has it)
    return {"mcu_temp": round(pyb.ADCAll(12, 0x70000).read_core_temp(), 1)}


async def _vdda(app):
    import pyb

    return {"vdda": round(pyb.ADCAll(12, 0x70000).read_vref(), 2)}  # analogue supply, from VREFINT


class Board(McuBoard):
    NAME = NAME
    MODEM = MODEM
    UART_ID = _UART_ID
    UART_KW = (("rxbuf", _RXBUF),)
    PWRKEY = (_PWRKEY, 1)
    RESET = (_RESET, 1)
    # No STATUS line: the BC660K-GL has no STATUS pin. VDD_EXT could stand in, but whether it stays up in deep
    # sleep is unverified, and a sleeping module read as "off" would get a needless PWRKEY pulse. The driver
    # probes with AT (which also wakes the module) instead.
    STATUS = None
    PWRKEY_ON_MS = _PWRKEY_ON_MS
    PWRKEY_OFF_MS = None  # the BC660K-GL powers off with AT+QPOWD only
    RESET_MS = _RESET_MS
    SETTLE_MS = _SETTLE_MS
    WDT_MAX_MS = _WDT_MAX_MS

    def readers(self):
        return {"mcu_temp": _mcu_temp, "vdda": _vdda}
