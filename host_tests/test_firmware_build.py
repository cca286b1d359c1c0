"""tools/firmware.py and tools/qemu_cm3.py without a toolchain (issue 16): what makes an image stale, the flash
figures read from a linker map, the refusals with their reasons, the seed the qemu_cm3 board's _boot.py reads,
the QEMU command line. (Building and running the images: test_mcu.py, make firmware, make mcu-test.)"""

import json
import shutil
import struct

import pytest
from e2e import ROOT

from tools import firmware, qemu_cm3


def test_every_image_board_has_a_manifest_and_a_known_port():
    assert set(firmware.boards()) >= {"stm32_bc660k", "qemu_cm3"}
    for b in firmware.boards():
        s = firmware.spec(b)
        assert s["port"] in ("stm32", "qemu") and (ROOT / "boards" / b / "manifest.py").is_file()
        for v in s.get("vendor", ()):
            assert v in firmware.VENDOR_ARCHIVES
        for p in s.get("patches", ()):
            assert (ROOT / "boards" / b / p).is_file()
    assert firmware.spec("stm32_bc660k")["base_board"] == "NUCLEO_F429ZI"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the sources the images are built from, as tools.firmware's ROOT."""
    for d in ("boards", "lib", "firmware"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "manifest.py", tmp_path / "manifest.py")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "boards.md").write_text("docs\n")
    monkeypatch.setattr(firmware, "ROOT", tmp_path)
    monkeypatch.setattr(firmware, "BOARDS", tmp_path / "boards")
    return tmp_path


@pytest.mark.parametrize("board", ["stm32_bc660k", "qemu_cm3"])
def test_the_digest_follows_what_the_image_is_built_from(tree, board):
    d0 = firmware.digest(board)
    assert firmware.digest(board) == d0
    (tree / "docs" / "boards.md").write_text("other docs\n")  # not an input
    (tree / "boards" / "esp32_bg96" / "board.py").write_text("# another board\n")
    assert firmware.digest(board) == d0
    changed = []
    for rel in ("lib/cellmqtt/at_engine.py", "firmware/app/outbox.py", "manifest.py", "boards/common/board_base.py",
                "boards/%s/board.py" % board, "boards/%s/manifest.py" % board):
        p = tree / rel
        p.write_text(p.read_text() + "\n# changed\n")
        changed.append(firmware.digest(board))
    assert len(set(changed)) == len(changed) and d0 not in changed
    assert firmware.digest(board, mpy_dir="/some/tree") != changed[-1]  # another MicroPython
    spec = json.loads((tree / "boards" / board / "firmware.json").read_text())
    spec["make"] = {"MICROPY_X": "1"}
    (tree / "boards" / board / "firmware.json").write_text(json.dumps(spec))
    assert firmware.digest(board) != changed[-1]


def test_the_qemu_board_layer_and_patch_are_inputs(tree):
    d0 = firmware.digest("qemu_cm3")
    p = tree / "boards" / "qemu_cm3" / "port" / "cm3_uart.c"
    p.write_text(p.read_text() + "\n")
    d1 = firmware.digest("qemu_cm3")
    p = tree / "boards" / "qemu_cm3" / "port" / "qemu-port.patch"
    p.write_text(p.read_text() + "\n")
    assert len({d0, d1, firmware.digest("qemu_cm3")}) == 3


def test_an_unknown_board_and_a_missing_toolchain_say_why(monkeypatch):
    with pytest.raises(firmware.BuildError, match="esp32_bg96/firmware.json: no such file"):
        firmware.build("esp32_bg96")
    monkeypatch.setattr(firmware.shutil, "which", lambda t: None if t.startswith("arm-none-eabi") else "/bin/" + t)
    assert "arm-none-eabi-gcc" in firmware.check_tools()
    monkeypatch.setattr(firmware, "OUT", ROOT / "build" / "firmware-test-no-toolchain")
    try:
        with pytest.raises(firmware.BuildError, match="no ARM toolchain: not installed: arm-none-eabi-gcc"):
            firmware.build("stm32_bc660k", force=True, quiet=True)
    finally:
        shutil.rmtree(ROOT / "build" / "firmware-test-no-toolchain", ignore_errors=True)


def test_a_vendor_archive_with_another_checksum_is_refused(tmp_path, monkeypatch):
    (tmp_path / "lwip-77dcd25a-src.tar.xz").write_bytes(b"not the archive")
    monkeypatch.setattr(firmware, "VENDOR", tmp_path)
    with pytest.raises(firmware.BuildError, match="sha256 .* expected 7728e71e"):
        firmware._vendor("lwip")
    with pytest.raises(firmware.BuildError, match="not found"):
        firmware._vendor("stm32lib")


MAP = """\
Discarded input sections

 .rodata.x      0x00000000      0x400 build/frozen_content.o

Memory Configuration

Linker script and memory map

.text           0x08020000    0x90000
 .text.main     0x08020100       0x40 build/main.o
 .rodata.mp_frozen_names
                0x08084980       0xa4 build/frozen_content.o
 .rodata        0x08084a24     0x5197 build/frozen_content.o
 .rodata.str1.1
                0x08089e60       0x10 build/py/obj.o
.data           0x20000000       0x64 load address 0x080a0000
 .data.frozen   0x20000010       0x20 build/frozen_content.o
.debug_info     0x00000000    0x1234
 .debug_info    0x00000000      0x999 build/frozen_content.o
"""


def test_frozen_bytes_counts_the_loaded_sections_of_frozen_content_only(tmp_path):
    m = tmp_path / "firmware.map"
    m.write_text(MAP)
    assert firmware.frozen_bytes(m) == 0xA4 + 0x5197 + 0x20  # not the discarded, not the debug information
    assert firmware.frozen_bytes(tmp_path / "none.map") == 0


def test_the_seed_is_what_boot_py_reads(tmp_path):
    flash = tmp_path / "flash"
    (flash / "certs").mkdir(parents=True)
    (flash / "config.json").write_text('{"board": "qemu_cm3"}')
    (flash / "certs" / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * 1500)
    main = tmp_path / "main.py"
    main.write_text("import app\n")
    files = qemu_cm3.flash_files(flash, main)
    assert [n for n, _ in files] == ["certs/ca.pem", "config.json", "main.py"]
    blob = qemu_cm3.seed(files)
    # the layout boards/qemu_cm3/_boot.py parses
    assert blob[:8] == b"CM3SEED1"
    i, got = 8, []
    while True:
        (ln,) = struct.unpack_from("<H", blob, i)
        if not ln:
            break
        name = blob[i + 2:i + 2 + ln].decode()
        (size,) = struct.unpack_from("<I", blob, i + 2 + ln)
        got.append((name, blob[i + 6 + ln:i + 6 + ln + size]))
        i += 6 + ln + size
    assert got == files and i + 2 == len(blob)
    assert qemu_cm3.flash_files(flash, None)[-1][0] == "config.json"  # no main.py added
    (flash / "main.py").write_text("print(1)\n")
    assert dict(qemu_cm3.flash_files(flash, main))["main.py"] == b"print(1)\n"  # the folder's own wins
    with pytest.raises(ValueError, match="the seed holds"):
        qemu_cm3.seed([("big", b"x" * qemu_cm3.SEED_MAX)])
    boot = (ROOT / "boards" / "qemu_cm3" / "_boot.py").read_text()
    assert 'b"CM3SEED1"' in boot and '"<H"' in boot and '"<I"' in boot


def test_the_qemu_command_puts_uart1_on_the_tty_and_the_seed_in_ssram2(monkeypatch):
    monkeypatch.setattr(qemu_cm3.shutil, "which", lambda t: "/usr/bin/" + t)
    cmd = qemu_cm3.qemu_command("fw.elf", "s.bin", "/tmp/modem")
    s = " ".join(cmd)
    assert "-machine mps2-an385" in s and "-semihosting" in s
    # UART0 = the first -serial (stdio), UART1 = the second (the modem's tty)
    assert s.index("-serial stdio") < s.index("-serial chardev:modem")
    assert "-chardev serial,id=modem,path=/tmp/modem" in s
    assert "loader,file=s.bin,addr=0x20200000" in s
    assert "-serial pty" in " ".join(qemu_cm3.qemu_command("fw.elf"))
    hdr = (ROOT / "boards" / "qemu_cm3" / "port" / "cm3.h").read_text()
    assert "CM3_SEED_ADDR (0x%08x)" % qemu_cm3.SEED_ADDR in hdr and "CM3_SEED_MAX (0x%08x)" % qemu_cm3.SEED_MAX in hdr
