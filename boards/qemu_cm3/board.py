# Board: qemu_cm3, the project's Cortex-M3 test board (QEMU mps2-an385, boards/qemu_cm3/README.md). The modem
# hangs on UART1 (CMSDK APB UART at 0x40005000), which tools/qemu_cm3.py connects to the modem emulator's pty;
# UART0 is the REPL and the log. No power or reset lines: the driver resets the module with AT commands.
# Frozen as `board` (boards/qemu_cm3/manifest.py); firmware/app/main.py builds Board(cfg) from it.
from board_base import McuBoard
from micropython import const

NAME = "qemu_cm3"  # config.json "board"

_UART_ID = const(1)
_RXBUF = const(4096)  # the port's largest ring: a +QMTRECV plus URCs while the loop is busy
# rxidle: poll() says readable once the line has been quiet 10 ms (or the ring is half full), so a reply is
# read in a few reads instead of one per byte burst (make bench: UART reads per AT reply)
RXIDLE_MS = 10
# the CMSDK APB watchdog counts 2 x 2^32 cycles of 25 MHz at most (~343 s); longer app timeouts are extended in
# software (board_base._LongWatchdog)
_WDT_MAX_MS = const(340000)


class Board(McuBoard):
    NAME = NAME
    MODEM = None  # any: the emulator plays a BG96 or a BC660K-GL
    UART_ID = _UART_ID
    UART_KW = (("rxbuf", _RXBUF), ("rxidle", RXIDLE_MS))
    SETTLE_MS = 0
    WDT_MAX_MS = _WDT_MAX_MS
