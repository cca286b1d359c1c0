# Board: ESP32-WROOM-32 (MicroPython ESP32_GENERIC, 1.29) driving a Quectel BG96 (LTE-M / NB-IoT).
# On the device this file is /board.py (tools/deploy.py) or frozen as `board` (boards/esp32_bg96/manifest.py);
# firmware/app/main.py builds Board(cfg) from it. Wiring and every constant: docs/boards.md.
#
# The BG96's UART and STATUS are 1.8 V logic: they go through a level translator to the ESP32's 3.3 V pins.
# PWRKEY and RESET_N are driven through NPN transistors (Quectel's reference circuit), so MCU high = line low.
import machine
from board_base import McuBoard
from micropython import const

NAME = "esp32_bg96"  # config.json "board"
MODEM = "bg96"  # config.json "modem.type"

# UART2: UART0 is the USB/REPL console and UART1's default pins belong to the SPI flash.
_UART_ID = const(2)
_TX = const(17)  # ESP32 TX -> translator -> BG96 MAIN_RXD. GPIO16/17 are free on WROOM (PSRAM on WROVER).
_RX = const(16)  # BG96 MAIN_TXD -> translator -> ESP32 RX
_RXBUF = const(4096)  # a full +QMTRECV (~1.5 KB) plus URCs arriving while a flash write stalls the loop
_TXBUF = const(1024)  # a whole QMTPUB payload fits: write() returns without waiting for the wire
RTS = None  # BG96 hardware flow control is optional; set both to GPIO numbers (e.g. 18, 19) when wired
CTS = None

_PWRKEY = const(26)  # NPN base; not a strapping pin, so the line stays released while the ESP32 boots
_RESET = const(27)  # NPN base, same reason
_STATUS = const(34)  # input-only pin; BG96 STATUS (1.8 V, high = on) through the translator

# BG96 Hardware Design timings
_PWRKEY_ON_MS = const(600)  # power on: PWRKEY low >= 500 ms; kept under the 650 ms power-off threshold
_PWRKEY_OFF_MS = const(800)  # power off: PWRKEY low >= 650 ms, the power-down procedure starts on release
_RESET_MS = const(300)  # RESET_N low 150..460 ms: the middle of the window
_ON_TIMEOUT_MS = const(10000)  # STATUS rises >= 4.8 s after the power-on pulse; give up after 10 s
_OFF_TIMEOUT_MS = const(15000)  # STATUS falls when the power-down procedure (network detach) has finished

VBAT_ADC = 35  # supply voltage through a 1:2 divider on an ADC1 pin; None when not fitted
_VBAT_DIV = const(2)


async def _mcu_temp(app):
    import esp32

    # die temperature in degrees F on the original ESP32 (uncalibrated: tracks changes, not absolute air temp)
    return {"mcu_temp": round((esp32.raw_temperature() - 32) / 1.8, 1)}


class Board(McuBoard):
    NAME = NAME
    MODEM = MODEM
    UART_ID = _UART_ID
    UART_KW = (("tx", _TX), ("rx", _RX), ("rxbuf", _RXBUF), ("txbuf", _TXBUF))
    PWRKEY = (_PWRKEY, 1)
    RESET = (_RESET, 1)
    STATUS = (_STATUS, 1, None)
    PWRKEY_ON_MS = _PWRKEY_ON_MS
    PWRKEY_OFF_MS = _PWRKEY_OFF_MS
    RESET_MS = _RESET_MS
    ON_TIMEOUT_MS = _ON_TIMEOUT_MS
    OFF_TIMEOUT_MS = _OFF_TIMEOUT_MS

    def __init__(self, cfg):
        if RTS is not None:
            self.UART_KW = self.UART_KW + (("rts", RTS), ("cts", CTS), ("flow", machine.UART.RTS | machine.UART.CTS))
        super().__init__(cfg)

    def readers(self):
        r = {"mcu_temp": _mcu_temp}
        if VBAT_ADC is not None:
            adc = machine.ADC(machine.Pin(VBAT_ADC), atten=machine.ADC.ATTN_11DB)

            async def vbat(app):
                return {"vbat": round(adc.read_uv() * _VBAT_DIV / 1000000, 2)}

            r["vbat"] = vbat
        return r
