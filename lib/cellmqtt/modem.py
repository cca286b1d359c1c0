# The modem-driver boundary: the errors a driver raises (the app sees these, never the AT engine's), the
# events it publishes (module restarted, powered down, PDP context lost, registration changed), and the base
# class whose capabilities a module may lack are harmless no-ops (the app never asks hasattr).
#
#   m.listen(fn)            fn(kind, value) for every event below, called from the AT reader: quick, no awaits
#   await m.start() ... await m.configure_ssl()     the bring-up steps, in this order (docs/architecture.md)
#   await m.signal()        {"rssi": ..., ...} for telemetry
#   async with m.awake():   keep a sleepy module awake for one exchange
from cellmqtt.at_engine import AtClosed, AtError, AtTimeout

# Events (Modem.listen)
RESET = "reset"  # the module booted (RDY) while we watched: every socket, client and volatile setting is gone
DOWN = "down"  # the module powered down (POWERED DOWN)
CLOSED = "closed"  # the driver was closed: the UART is released
PDP = "pdp"  # the network deactivated the PDP context (value: the context id)
REG = "reg"  # registration changed (value: the +CEREG stat)
SIM = "sim"  # the SIM asks for something (value: the +CPIN state)
PSM = "psm"  # the module entered (True) or left (False) power saving mode


class ModemError(Exception):
    """A driver-level failure with the module's reason attached; ``code`` is the module's own code or None."""

    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


class ModemNotResponding(ModemError):
    """The module does not answer at all (or its UART went away): power or reset it."""


class CommandFailed(ModemError):
    """An AT command of a bring-up step was refused (``code``: the +CME code, or None) or not answered in its
    time (``timeout`` True)."""

    def __init__(self, msg, code=None, timeout=False):
        super().__init__(msg, code)
        self.timeout = timeout


class SimError(ModemError):
    pass


class RegistrationError(ModemError):
    pass


class PdpError(ModemError):
    pass


class CertUploadError(ModemError):
    pass


def modem_error(e):
    """An engine error as the driver boundary's error (AtClosed: not responding; the rest: CommandFailed)."""
    if isinstance(e, AtClosed):
        return ModemNotResponding(str(e))
    return CommandFailed(str(e), e.code, isinstance(e, AtTimeout))


async def guard(coro):
    """Run a driver step, converting any engine error that escapes it into a ModemError."""
    try:
        return await coro
    except AtError as e:
        raise modem_error(e) from None


class _NoSleep:
    # awake() of a module that does not sleep: one shared object, nothing allocated per exchange
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


_NO_SLEEP = _NoSleep()


class Modem:
    """What every driver offers. Capabilities a module lacks keep these no-op defaults."""

    def __init__(self):
        self._listeners = []

    def listen(self, fn):
        """Call fn(kind, value) for every event (RESET, DOWN, CLOSED, PDP, REG, SIM, PSM)."""
        self._listeners.append(fn)

    def _event(self, kind, value=None):
        for fn in self._listeners:
            fn(kind, value)

    async def configure_radio(self):
        """Apply the radio settings the module has (RAT, bands); returns how many changed."""
        return 0

    async def configure_power(self):
        """Apply the power-saving settings the module has (PSM, eDRX)."""

    async def allow_sleep(self):
        """Bring-up is over: a module that sleeps may do so between exchanges from now on."""

    def awake(self):
        """``async with modem.awake():`` one exchange during which the module stays awake."""
        return _NO_SLEEP
