"""The layers as docs/architecture.md draws them, checked on the source: no import circle in lib/, the app never
imports the AT engine (but for its start-up wiring), no module reaches into another's private names, the app
never probes the modem or the profile with hasattr, and no cloud name or cloud reply code appears in the app
outside the profile factory."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib" / "cellmqtt"
APP = ROOT / "firmware" / "app"
CLOUD_WORDS = re.compile(r"huawei|enos|iotda|oceanconnect", re.I)
CLOUD_CODES = {1008, 1009, 1101, 1102, 1220, 1251, 1260}  # EnOS reply codes (clouds.md 2.3)


def tree(path):
    return ast.parse(path.read_text(), str(path))


def imported_modules(path):
    """Every module a file imports, wherever the import is (lazy ones too)."""
    out = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(node.module)
            out |= {node.module + "." + a.name for a in node.names}
    return out


def lib_graph():
    mods = {p.stem: p for p in LIB.glob("*.py")}
    graph = {}
    for name, p in mods.items():
        graph[name] = {m.split(".")[1] for m in imported_modules(p) if m.startswith("cellmqtt.")
                       and m.split(".")[1] in mods and m.split(".")[1] != name}
    return graph


def cycles(graph):
    found, state = [], {}

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                found.append(path[path.index(m):] + [m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def test_no_import_circle_in_lib():
    g = lib_graph()
    assert g["bg96_socket"] >= {"bg96"} and "bg96_socket" not in g["bg96"]  # one way: socket -> driver
    assert cycles(g) == []


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_app_sees_no_engine_but_in_its_start_up_wiring():
    users = sorted(p.name for p in APP.glob("*.py") if any(m.startswith("cellmqtt.at_engine")
                                                              for m in imported_modules(p)))
    assert users == ["wiring.py"]


def private_uses(path):
    """(line, what) for every use of another module's _private name: ``from m import _x`` and ``mod._x`` on an
    imported module."""
    t = tree(path)
    out = []
    modules = set()
    for node in ast.walk(t):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append((node.lineno, "%s.%s" % (node.module, a.name)))
                if node.module in ("cellmqtt", "app", "tools"):  # from cellmqtt import quectel
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(t):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                out.append((node.lineno, "%s.%s" % (node.value.id, node.attr)))
    return out


def test_no_module_uses_another_modules_private_names():
    found = {}
    for p in sorted(list(LIB.glob("*.py")) + list(APP.glob("*.py")) + [ROOT / "firmware" / "main.py"]
                    + list((ROOT / "boards").glob("*/*.py"))):
        uses = private_uses(p)
        if uses:
            found[str(p.relative_to(ROOT))] = uses
    assert found == {}


def test_the_private_name_check_sees_both_forms(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from cellmqtt.quectel import _int\nfrom cellmqtt import quectel\nx = quectel._CSQ\n")
    assert [w for _, w in private_uses(f)] == ["cellmqtt.quectel._int", "quectel._CSQ"]


def test_the_app_never_probes_the_modem_or_the_profile():
    probes = []
    for p in APP.glob("*.py"):
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr"):
                target = ast.unparse(node.args[0])
                if re.search(r"modem|profile|transport|\bm\b|\bp\b|\bt\b", target):
                    probes.append("%s:%d %s" % (p.name, node.lineno, ast.unparse(node)))
    assert probes == []


def test_no_cloud_name_or_code_in_the_app_outside_the_profile_factory():
    found = []
    for p in APP.glob("*.py"):
        if p.name in ("wiring.py", "plain.py"):  # the profile factory, and the plain-MQTT profile itself
            continue
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Constant):
                v = node.value
                if (isinstance(v, str) and CLOUD_WORDS.search(v)) or (type(v) is int and v in CLOUD_CODES):
                    found.append("%s:%d %r" % (p.name, node.lineno, v))
    assert found == []
