# Shared logic of the MCU boards (boards/esp32_bg96, boards/stm32_bc660k): the Board interface the app and the
# drivers use (see boards/unix/board.py), built from the constants a board file sets: pins, the UART, timings,
# which modem it carries. It knows nothing of clouds or of the configuration beyond modem.baud. Installed as
# /lib/board_base.py (tools/deploy.py) or frozen next to the board's board.py (its manifest.py).
#
# Power lines are driven through an open-collector stage (NPN / N-MOSFET, as Quectel's reference designs
# recommend), so every line has an "active" MCU level; a pulse is blocking (time.sleep_ms) because its width is
# bounded on both sides on some modules (BG96 RESET_N 150..460 ms) and an asyncio sleep can overrun by however
# long another task holds the loop. Long waits (STATUS rising after power-on) are asyncio sleeps.
import asyncio
from time import sleep_ms, ticks_diff, ticks_ms

import machine
from cellmqtt.modem import ModemNotResponding
from micropython import const

_POLL_MS = const(100)  # STATUS poll period while waiting for the module to come up or go down


class _Line:
    """One output line through a driver stage: ``active`` is the MCU level that asserts the modem's pin."""

    def __init__(self, pin_id, active):
        self.active = active
        # value= sets the level before the pin becomes an output: no glitch that would reset the module at boot
        self.pin = machine.Pin(pin_id, machine.Pin.OUT, value=1 - active)

    def pulse(self, ms):
        self.pin.value(self.active)
        sleep_ms(ms)
        self.pin.value(1 - self.active)


class _LongWatchdog:
    """A hardware watchdog whose longest timeout is shorter than the app's (STM32 IWDG: ~32 s). A task feeds the
    hardware while the app has fed us within ``timeout_ms``; if the app stops feeding (a hung supervisor) or the
    event loop stops (a blocked task), the hardware resets the MCU at most ``timeout_ms + hw_ms`` later."""

    def __init__(self, wdt, timeout_ms, hw_ms):
        self.wdt = wdt
        self.timeout_ms = timeout_ms
        self.fed = ticks_ms()
        self.task = asyncio.create_task(self._keep(hw_ms // 4))

    def feed(self):
        self.fed = ticks_ms()
        self.wdt.feed()

    async def _keep(self, period_ms):
        while ticks_diff(ticks_ms(), self.fed) < self.timeout_ms:
            self.wdt.feed()
            await asyncio.sleep_ms(period_ms)


class McuBoard:
    """Base of the MCU boards. A subclass sets the class constants below; ``None`` means "not wired"."""

    NAME = None  # the config's "board" value this firmware accepts
    MODEM = None  # the config's "modem.type" this board carries
    UART_ID = None
    UART_KW = ()  # port-specific machine.UART keyword arguments as (name, value) pairs (pins, buffers, flow)
    PWRKEY = None  # (pin, active MCU level)
    RESET = None  # (pin, active MCU level)
    STATUS = None  # (pin, MCU level meaning "module on", pull)
    PWRKEY_ON_MS = None  # PWRKEY pulse that turns the module on
    PWRKEY_OFF_MS = None  # PWRKEY pulse that turns it off; None: the module has no PWRKEY power-off
    RESET_MS = None
    ON_TIMEOUT_MS = 10000  # STATUS must rise within this after the power-on pulse
    OFF_TIMEOUT_MS = 15000  # ... and fall within this after the power-off pulse
    SETTLE_MS = 5000  # without STATUS: how long to wait after a power pulse before the driver probes AT
    WDT_MAX_MS = None  # longest timeout machine.WDT accepts on this MCU; None: no limit that matters

    def __init__(self, cfg):
        # the app's start-up has checked that cfg is for this board (NAME) and its modem (MODEM)
        self.baud = cfg["modem"]["baud"]
        # outputs first, each created at its inactive level; then the input
        self._pwrkey = _Line(*self.PWRKEY) if self.PWRKEY else None
        self._reset = _Line(*self.RESET) if self.RESET else None
        self._status = None
        if self.STATUS:
            pin, self._on, pull = self.STATUS
            self._status = machine.Pin(pin, machine.Pin.IN, pull)

    def uart(self):
        # timeout=0: reads return what is buffered, which is what the asyncio stream expects after poll
        return machine.UART(self.UART_ID, baudrate=self.baud, timeout=0, **dict(self.UART_KW))

    def pipe(self):
        from cellmqtt.at_engine import StreamPipe

        return StreamPipe(self.uart())

    def status(self):
        if self._status is None:
            return None
        return self._status.value() == self._on

    async def _wait_status(self, on, timeout_ms):
        if self._status is None:
            await asyncio.sleep_ms(self.SETTLE_MS)
            return
        t0 = ticks_ms()
        while self.status() != on:
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                raise ModemNotResponding("STATUS still %s %d ms after the PWRKEY pulse" %
                                         ("low" if on else "high", timeout_ms))
            await asyncio.sleep_ms(_POLL_MS)

    async def power_on(self):
        if self._pwrkey is None:
            return False
        self._pwrkey.pulse(self.PWRKEY_ON_MS)
        await self._wait_status(True, self.ON_TIMEOUT_MS)
        return True

    async def power_off(self):
        if self._pwrkey is None or self.PWRKEY_OFF_MS is None:
            return False
        self._pwrkey.pulse(self.PWRKEY_OFF_MS)
        await self._wait_status(False, self.OFF_TIMEOUT_MS)
        return True

    async def reset(self):
        if self._reset is None:
            return False
        self._reset.pulse(self.RESET_MS)
        return True  # the driver then waits for RDY / an answer to AT

    def watchdog(self, timeout_ms):
        cap = self.WDT_MAX_MS
        if cap is None or timeout_ms <= cap:
            return machine.WDT(timeout=timeout_ms)
        return _LongWatchdog(machine.WDT(timeout=cap), timeout_ms, cap)

    def reboot(self):
        machine.reset()

    def readers(self):
        return {}

    def codec(self):
        """The payload codec of a Huawei product with a binary codec plug-in, or None (the app's demo layout)."""
        return None
