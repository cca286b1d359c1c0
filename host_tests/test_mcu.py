"""The firmware on an emulated Cortex-M3 (issue 16): the qemu_cm3 image (boards/qemu_cm3, `make firmware
BOARD=qemu_cm3`) with the firmware frozen in, its UART1 on the modem emulator's pty, real TLS to the cloud
twin. The short version of `make mcu-test` (tools/mcu_test.py runs the long one): for each modem, telemetry
accepted, a command answered, a modem reset and a link loss survived with zero samples lost.

Skipped, with the reason, when the machine has no arm-none-eabi-gcc or qemu-system-arm. The QEMU runs share
one xdist group: they never run in parallel with each other (each takes a CPU while it runs).
"""

import pytest
from e2e_mcu import McuDevice, Unavailable, image, missing_tools

pytestmark = [pytest.mark.xdist_group("mcu"), pytest.mark.slow]

MODEMS = ("bg96", "bc660k")


@pytest.fixture(scope="module")
def mcu_image():
    why = missing_tools()
    if why:
        pytest.skip("MCU tests skipped: " + why)
    try:
        return image()
    except Unavailable as e:
        pytest.skip("MCU tests skipped: %s" % e)


@pytest.fixture
def mcudev(tmp_path, pki, start_twin, start_modemsim, mcu_image):
    made = []

    def make(**kw):
        d = McuDevice(tmp_path / ("mcu%d" % len(made)), pki, start_twin, start_modemsim, mcu_image["elf"], **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def contiguous(samples):
    ids = sorted(int(s) for s in samples)
    return ids == list(range(ids[0], ids[0] + len(ids))), ids


def scenario(d, faults=({"action": "reset", "mode": "crash"}, {"action": "qmtstat", "client": 0, "code": 1}),
             timeout=90):
    """The demo scenario on the device: telemetry, a command answered, then each fault survived; returns the
    twin's telemetry record. Asserts no sample was lost."""
    from e2e import commands_round_trip

    d.start()
    d.wait_samples(2, timeout=timeout)
    body = commands_round_trip(d, quiet=d.modem_kind == "bc660k")
    assert body.get("interval") is not None
    for fault in faults:
        before = len(d.connections())
        d.fault(fault)
        d.twin.control.wait_for(lambda b=before: any(c["accepted"] for c in d.connections()[b:]), timeout,
                                what="reconnect after %s" % fault["action"])
        d.wait_samples(d.telemetry()["unique"] + 2, timeout=timeout)
    tel = d.telemetry()
    ok, ids = contiguous(tel["samples"])
    assert ok, ("a sample was lost", ids)
    assert tel["duplicates"] <= len(faults), tel["duplicate_ids"]
    return tel


@pytest.mark.parametrize("modem", MODEMS)
def test_demo_scenario_on_the_emulated_cortex_m3(mcudev, modem):
    d = mcudev(cloud="huawei", modem=modem, interval=2)
    scenario(d)
    log = d.fw.log_text()
    assert "Traceback" not in log and "MemoryError" not in log, log[-3000:]
    assert "qemu_cm3: formatted the RAM disk; 4 seeded file(s)" in log, log[:2000]
    assert "the modem restarted: starting over" in log, log[-3000:]
    assert d.fw.alive(), log[-3000:]  # the firmware ran the whole time: no crash, no watchdog reset
