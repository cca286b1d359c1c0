"""The firmware on an emulated Cortex-M3 (issue 16): the qemu_cm3 image (boards/qemu_cm3, `make firmware
BOARD=qemu_cm3`) with the firmware frozen in, its UART1 on the modem emulator's pty, real TLS to the cloud
twin. For each modem: telemetry accepted, a command answered, a modem reset and a link loss survived with zero
samples lost; and the board layer itself. `make mcu-test` runs the long version (CELLMQTT_MCU_TEST=long: every
fault, EnOS with sha256 and sha1, the socket transport).

Skipped, with the reason, when the machine has no arm-none-eabi-gcc or qemu-system-arm. The QEMU runs share
one xdist group: they never run in parallel with each other (each takes a CPU while it runs).
"""

import os

import pytest
from e2e_mcu import McuDevice, Unavailable, image, missing_tools

pytestmark = [pytest.mark.xdist_group("mcu"), pytest.mark.slow]

MODEMS = ("bg96", "bc660k")
# `make mcu-test` sets CELLMQTT_MCU_TEST=long: every fault of the unix-port matrix, the socket transport and
# EnOS as well; and there a missing toolchain is a failure, not a skip
LONG = os.environ.get("CELLMQTT_MCU_TEST") == "long"
SHORT_FAULTS = ({"action": "reset", "mode": "crash"}, {"action": "qmtstat", "client": 0, "code": 1})
LONG_FAULTS = SHORT_FAULTS + (
    {"action": "pdp_lost"},
    {"action": "registration_lost", "stat": 2, "recover_s": 2, "drop_links": True},
    {"action": "qmtstat", "client": 0, "code": 2},
    {"action": "tls_fail", "count": 2},
)


@pytest.fixture(scope="module")
def mcu_image():
    why = missing_tools()
    try:
        if why:
            raise Unavailable(why)
        return image()
    except Unavailable as e:
        if LONG:
            pytest.fail("make mcu-test: %s" % e)
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


def scenario(d, faults=SHORT_FAULTS, timeout=90):
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
        if fault["action"] in ("tls_fail", "broker_refuse"):  # they bite on the next connect: make one happen
            d.fault({"action": "qmtstat", "client": 0, "code": 1})
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
    scenario(d, LONG_FAULTS if LONG else SHORT_FAULTS)
    log = d.fw.log_text()
    assert "Traceback" not in log and "MemoryError" not in log, log[-3000:]
    assert "qemu_cm3: formatted the RAM disk; 4 seeded file(s)" in log, log[:2000]
    assert "the modem restarted: starting over" in log, log[-3000:]
    assert d.fw.alive(), log[-3000:]
    assert log.count("INFO cellmqtt app ") == 1, log[-3000:]  # one start: the board never reset


@pytest.mark.skipif(not LONG, reason="make mcu-test only (the long version)")
@pytest.mark.parametrize("modem", MODEMS)
@pytest.mark.parametrize("cloud, transport, signmethod", [
    ("enos", "native", "sha256"),
    ("enos", "native", "sha1"),  # hashlib.sha1 on the image (mbed TLS's hash files)
    # found by make mcu-test: with our MQTT client over the module's TLS socket the firmware does not fit the
    # 64 KB heap (MemoryError from the bring-up on, both modems); strict: this flips to a failure once it fits
    pytest.param("huawei", "socket", None, marks=pytest.mark.xfail(
        strict=True, reason="socket transport: MemoryError in the 64 KB heap of the qemu_cm3 image")),
])
def test_other_clouds_and_transports_on_the_emulated_cortex_m3(mcudev, modem, cloud, transport, signmethod):
    over = {"cloud": {"enos": {"signmethod": signmethod}}} if signmethod else {}
    d = mcudev(cloud=cloud, modem=modem, transport=transport, interval=2, config_over=over)
    scenario(d, SHORT_FAULTS)
    assert d.fw.alive()
    log = d.fw.log_text()
    assert log.count("INFO cellmqtt app ") == 1, log[-3000:]
    if signmethod:
        assert "signmethod=%s," % signmethod in log, log[-3000:]  # the client id it connected with


# ---- the board layer itself (boards/qemu_cm3/port), exercised by a script on the image

BOARD_SCRIPT = r"""
import os, time, machine, select, binascii, cm3
try:
    with open("/boot.txt") as f:
        boot = int(f.read()) + 1
except OSError:
    boot = 1
with open("/boot.txt", "w") as f:
    f.write(str(boot))
print("BOOT %d cause=%d" % (boot, machine.reset_cause()))
if boot == 1:
    import hashlib
    print("SHA1 %s" % binascii.hexlify(hashlib.sha1(b"abc").digest()).decode())
    print("TIME %d %d" % (time.time(), time.ticks_ms()))
    t0 = time.ticks_ms(); time.sleep_ms(1000); print("SLEPT %d" % time.ticks_diff(time.ticks_ms(), t0))
    u = machine.UART(1, 115200, timeout=0, rxbuf=4096, rxidle=50)
    p = select.poll(); p.register(u, select.POLLIN)
    print("READY")
    while not u.any():
        pass
    t0 = time.ticks_ms()
    early = p.poll(0)
    late = p.poll(2000)
    print("IDLE %d %d %d" % (len(early), len(late), time.ticks_diff(time.ticks_ms(), t0)))
    time.sleep_ms(1500)  # not reading: what arrives meanwhile must wait in the ring
    print("ANY %d" % u.any())
    buf = bytearray(4096); got = 0; crc = 0; t0 = time.ticks_ms()
    while got < 3000 and time.ticks_diff(time.ticks_ms(), t0) < 5000:
        if p.poll(100):
            n = u.readinto(buf)
            crc = binascii.crc32(buf[:n], crc); got += n
    print("RX %d %08x" % (got, crc))
    u.write(bytes(range(256)) * 8)
    print("WDT")
    w = machine.WDT(timeout=300)
    time.sleep_ms(2000)
    print("NOT RESET")
elif boot == 2:
    machine.reset()
"""


def test_qemu_cm3_board_layer(tmp_path, mcu_image):
    """hashlib.sha1; time from the host clock and a SysTick/timer time base that keeps real time; UART1's interrupt-driven ring
    takes a 3000-byte burst whole while the program does not read (the RX register holds one byte); rxidle holds poll() until the
    line is quiet; TX; the watchdog resets a board that is not fed, machine.reset() too, and the RAM disk (the
    board's flash) survives both."""
    import binascii
    import select
    import subprocess
    import sys
    import time
    import tty

    from e2e import ROOT

    master, slave = os.openpty()
    tty.setraw(slave)
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(BOARD_SCRIPT)
    log = open(tmp_path / "qemu.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "tools.qemu_cm3", "--image", mcu_image["elf"], "--flash", str(flash),
                          "--port", os.ttyname(slave)], cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT)
    out = tmp_path / "qemu.log"

    def wait(word, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith(word):
                    return line.split()[1:]
            assert p.poll() is None, out.read_text()
            time.sleep(0.02)
        raise AssertionError("no %s line:\n%s" % (word, out.read_text(errors="replace")))

    try:
        assert wait("BOOT") == ["1", "cause=1"]  # PWRON_RESET
        assert wait("SHA1") == ["a9993e364706816aba3e25717850c26c9cd0d89d"]  # FIPS 180 "abc" (EnOS signmethod sha1)
        t, _ = (int(x) for x in wait("TIME"))
        assert abs(t - time.time()) < 5
        t_host = time.monotonic()
        slept = int(wait("SLEPT")[0])
        assert 1000 <= slept < 1100, slept
        assert time.monotonic() - t_host > 0.9  # guest milliseconds are host milliseconds
        wait("READY")
        data = bytes((i * 7 + 3) & 0xFF for i in range(3000))
        os.write(master, data[:1])
        time.sleep(0.2)
        early, late, waited = (int(x) for x in wait("IDLE"))
        assert (early, late) == (0, 1) and waited >= 40, (early, late, waited)  # rxidle=50: not readable at once
        os.write(master, data[1:])  # one burst: the pty hands QEMU the bytes as fast as the guest takes them
        assert wait("ANY") == ["3000"]  # all of it received by the interrupt while nobody read
        got, crc = wait("RX")
        assert int(got) == 3000 and int(crc, 16) == binascii.crc32(data), (got, crc, binascii.crc32(data))
        rx = b""
        deadline = time.monotonic() + 10
        while len(rx) < 2048 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                rx += os.read(master, 4096)
        assert rx == bytes(range(256)) * 8
        deadline = time.monotonic() + 20
        while "BOOT 3" not in out.read_text(errors="replace"):
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        text = out.read_text(errors="replace")
        assert "NOT RESET" not in text  # the watchdog fired
        assert "BOOT 2 cause=3" in text  # WDT_RESET, and /boot.txt survived it
        assert "BOOT 3 cause=5" in text  # SOFT_RESET (machine.reset), the file still there
        assert text.count("formatted the RAM disk") == 1  # the disk was formatted once, at the first boot
    finally:
        p.kill()
        p.wait(10)
        log.close()
        os.close(master)
        os.close(slave)
