"""The house rules, checked on the code itself (an AST reading of every import,
those inside functions included):

* layers point one way: ``bandit`` imports nothing of ``server``,
  ``simulator``, grpc or the generated wire code; ``server`` nothing of
  ``simulator``; ``simulator`` only the server's public surface;
  ``placement_cli`` is the top floor and nothing imports it;
* no import cycles between modules;
* no private name (``_x``) imported from another module;
* no test module imports another test module (shared helpers live in
  ``conftest.py`` or a helpers module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bandit", "server", "simulator")
ROOT_MODULE = "placement_cli"
# What the simulator may use of the server: the client, starting a server, its
# configuration, the engine protocol, and the model store (to read saved versions).
SERVER_SURFACE = {"server.client", "server.app", "server.config", "server.protocol", "server.modelstore"}
FORBIDDEN_IN_BANDIT = ("grpc", "grpc_health", "grpc_reflection", "placement", "server", "simulator")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [ROOT / f"{ROOT_MODULE}.py"]
    for package in (*PACKAGES, "bench"):
        files += sorted((ROOT / package).rglob("*.py"))
    return {_module_name(p): p for p in files}


MODULES = _sources()


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names taken from it, line) for every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def _targets(module: str, names: list[str]) -> set[str]:
    """The project modules an import reaches: ``from pkg import mod`` names a module."""
    found = {module} if module in MODULES else set()
    found |= {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
    return found


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names, _ in _imports(path):
            graph[module] |= {t for t in _targets(target, names) if t != module}
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def test_layers_point_one_way():
    problems = []
    for module, path in MODULES.items():
        layer = _top(module)
        for target, names, line in _imports(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if top == ROOT_MODULE and module != ROOT_MODULE:
                problems.append(f"{where}: nothing imports the top floor")
            if layer == "bandit" and top in FORBIDDEN_IN_BANDIT:
                problems.append(f"{where}: bandit is the learning core, with no gRPC, server or simulator")
            if layer == "server" and top == "simulator":
                problems.append(f"{where}: server never imports simulator")
            if layer == "simulator" and top == "server":
                reached = _targets(target, names) or {target}
                if not reached <= SERVER_SURFACE:
                    problems.append(f"{where}: simulator uses only {sorted(SERVER_SURFACE)}")
    assert not problems, "\n".join(problems)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_not_even_inside_functions():
    assert _cycles(_edges()) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    problems = [f"{path.relative_to(ROOT)}:{line}: {name} from {target}"
                for module, path in MODULES.items()
                for target, names, line in _imports(path) if _top(target) in (*PACKAGES, "bench")
                for name in names if name.startswith("_")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("*.py")), ids=lambda p: p.name)
def test_no_test_module_imports_another(path: Path):
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    bad = [f"line {line}: {target}" for target, _, line in _imports(path) if target.split(".")[0] in tests]
    assert not bad, f"{path.name} imports a test module: {bad}"
