"""docs/getting-started.md: its fenced blocks tagged ``sh test`` run as written (one bash script, in a scratch
copy of the paths it names) against the MicroPython unix port, the modem emulator and a local TLS broker; the
first boot it shows is what that run prints (for the BG96 and, with the emulator's other profile, the
BC660K-GL); docs/boards.md's emulator recipe is the same tested one; `make` / `make help` list every target and
variable; the docs' links point at files of the repository."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "getting-started.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(path, tag):
    return [body for info, body in FENCE.findall(path.read_text()) if info.strip() == tag]


def run_script(script, tmp, timeout=240):
    """Run the tagged blocks with build/try and mydevice moved into tmp (parallel runs must not share them)."""
    script = script.replace("$PWD/build/try", str(tmp / "try")).replace("build/try", str(tmp / "try"))
    script = script.replace("mydevice", str(tmp / "mydevice"))
    env = dict(os.environ, PATH=str(ROOT / ".venv" / "bin") + os.pathsep + os.environ["PATH"])
    env.pop("MICROPYPATH", None)
    p = subprocess.run(["bash", "-c", script], cwd=str(ROOT), capture_output=True, text=True, timeout=timeout,
                       env=env)
    return p.stdout + p.stderr


def first_boot_matches(doc_block, output):
    """Each line of the documented first boot appears in the run's output, in order (numbers may differ)."""
    pos = 0
    for line in doc_block.strip().splitlines():
        msg = line.split(" ", 1)[1]  # without the clock
        pattern = re.sub(r"\\\d(?:\\?\d)*|\d+", r"\\d+", re.escape(msg))
        pattern = pattern.replace(r"\d+\.\d+\.\d+\.\d+", r"[\d.]+")
        m = re.compile(r"^\d+ " + pattern + r"$", re.M).search(output, pos)
        assert m, "documented first-boot line not printed (in order): %r\n%s" % (line, output[-3000:])
        pos = m.end()


@pytest.fixture()
def device_ca(tmp_path):
    # the CA a user downloads from the console (the untested step of section 5), here a test one
    from tools import pki

    keys = pki.generate(tmp_path / "console-pki")
    (tmp_path / "mydevice" / "certs").mkdir(parents=True)
    shutil.copy(keys["ca_pem"], tmp_path / "mydevice" / "certs" / "huawei-ca.pem")
    return tmp_path


def test_guide_commands_run_as_written(device_ca):
    tmp = device_ca
    tested = blocks(GUIDE, "sh test")
    assert len(tested) >= 3
    out = run_script("\n".join(tested), tmp)
    # 1. the rehearsal: the firmware online, its transcript explained as a good run
    assert "INFO running" in out and "MQTT connected over TLS" in out, out[-4000:]
    assert "Result: no unresolved failure; reached publishes." in out, out[-4000:]
    assert "s3cret-1" not in out  # the password never reaches the log or the tool's output
    first_boot_matches(blocks(GUIDE, "text first-boot-bg96")[0], out)
    # 5. the example configuration, checked by the firmware's own loader
    assert "huawei configuration valid" in out
    # 6. the deploy's dry run: mpremote copies to the board's port, main.py last, the CA under certs/
    m = re.search(r"^\S*mpremote connect /dev/ttyUSB0 exec .*?\+ reset$", out, re.M | re.S)
    assert m, out[-3000:]
    plan = m.group(0)
    assert ":config.json" in plan and ":secrets.json" in plan and "huawei-ca.pem" in plan and ":certs/" in plan
    assert plan.rstrip().endswith("+ reset") and plan.index(":main.py") > plan.index(":config.json")
    assert "REPLACE-WITH-THE-DEVICE-SECRET" not in plan  # file paths only, never a secret's value


def test_the_bc660k_first_boot_is_what_the_guide_shows(tmp_path):
    rehearsal = blocks(GUIDE, "sh test")[0]
    assert "--profile bg96" in rehearsal and '"type": "bg96"' in rehearsal
    script = rehearsal.replace("--profile bg96", "--profile bc660k").replace('"type": "bg96"', '"type": "bc660k"')
    script = script.replace("make venv\n", "")
    out = run_script(script, tmp_path)
    first_boot_matches(blocks(GUIDE, "text first-boot-bc660k")[0], out)
    assert "Result: no unresolved failure; reached publishes." in out


def test_boards_md_emulator_recipe_is_the_tested_one():
    boards = (ROOT / "docs" / "boards.md").read_text()
    recipe = blocks(GUIDE, "sh test")[0]
    core = recipe.split(". .venv/bin/activate\n", 1)[1]
    assert core in boards, "docs/boards.md's emulator recipe differs from getting-started step 1"


def test_make_and_make_help_list_every_target_and_variable():
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    plain = subprocess.run([make, "-s"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    helped = subprocess.run([make, "-s", "help"], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and plain.stdout == helped.stdout and "Targets:" in plain.stdout
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    for t in phony:
        if t != "all":
            assert re.search(r"^  %s\s" % t, plain.stdout, re.M), (t, plain.stdout)
    variables = re.findall(r"^([A-Z_]+) \?=", (ROOT / "Makefile").read_text(), re.M)
    assert {"CLOUD", "MODEM", "TRANSPORT", "SCENARIO", "CONFIG", "PORT", "SECRETS", "TRANSCRIPT"} <= set(variables)
    for v in variables:
        assert v + "=" in plain.stdout, (v, plain.stdout)
    assert "(bg96)" in subprocess.run([make, "-s", "help"], cwd=str(ROOT), capture_output=True, text=True).stdout
    assert "(bc660k)" in subprocess.run([make, "-s", "help", "MODEM=bc660k"], cwd=str(ROOT), capture_output=True,
                                        text=True).stdout


@pytest.mark.parametrize("doc", ["docs/getting-started.md", "examples/README.md", "README.md", "docs/boards.md",
                                 "docs/modemsim.md", "docs/cloudtwin.md", "docs/clouds.md", "docs/architecture.md",
                                 "docs/outbox.md", "docs/log.md", "docs/mqtt_client.md"])
def test_docs_cite_only_files_of_the_repository(doc):
    path = ROOT / doc
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), (doc, target)
    assert "/work/" not in text and "shared/reference" not in text, doc  # the dev machine's paths
    assert not re.search(r"\bissue \d+\b", text), doc  # tracker numbers mean nothing to a reader of the repo


def test_explain_options_are_documented():
    p = subprocess.run([sys.executable, "-m", "tools.explain", "--help"], cwd=str(ROOT), capture_output=True,
                       text=True)
    opts = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", p.stdout)) - {"--help"}
    readme = (ROOT / "README.md").read_text()
    assert opts and all(o in readme for o in opts), opts
