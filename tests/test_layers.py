"""The package's import structure: arrows point down the layers, and no module imports itself
back through others.

Read from the source with `ast` (nothing is imported), function-level imports included: an
import inside a function is still an arrow a reader has to follow. The known exceptions are
debts listed by name; a new upward import or a new cycle fails here, and so does an entry of
the lists that no longer exists, so they only ever shrink.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"

# Bottom to top. A package may import from its own layer or any layer below it.
LAYERS: list[set[str]] = [
    {"ids", "logs", "metric_values", "money", "protocol", "settings", "sqlite_files", "supervise"},
    {"config"},
    {"backends"},
    {"routing"},
    {"proxy"},
    {"usage", "metrics", "ratelimit", "tenants", "conversations"},
    {"api"},
    {"cli", "__main__"},
]

# Upward imports still to be removed (codebase-health issue, item 5).
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Module cycles still to be broken.
KNOWN_CYCLES: list[list[str]] = []


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the gateway modules it imports (a `from pkg import mod` counts as pkg.mod)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gateway"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges[name].add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name.startswith("gateway"))
    return edges


def _layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"gateway/{package} is in no layer: add it to LAYERS in {__file__}")


def _package(module: str) -> str:
    return module.split(".")[1]


def _upward() -> set[tuple[str, str]]:
    found = set()
    for source, targets in _imports(_modules()).items():
        for target in targets:
            if target == "gateway":
                continue
            a, b = _package(source), _package(target)
            if a != b and _layer_of(b) > _layer_of(a):
                found.add((a, b))
    return found


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    modules = _modules()
    edges = _imports(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in modules:
                continue
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
                components.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return sorted(components)


def test_every_package_has_a_layer():
    for module in _modules():
        if module != "gateway":
            _layer_of(_package(module))


def test_imports_point_down_the_layers():
    upward = _upward()
    assert upward - KNOWN_UPWARD == set(), "new upward imports (a lower layer importing a higher one)"
    assert KNOWN_UPWARD - upward == set(), "fixed debts: remove them from KNOWN_UPWARD"


def test_no_new_import_cycles():
    assert _cycles() == sorted(KNOWN_CYCLES)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a made-up package with both faults is caught."""
    pkg = tmp_path / "gateway"
    for sub in ("config", "api"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config" / "a.py").write_text("from gateway.api import b\n")
    (pkg / "api" / "b.py").write_text("import gateway.config.a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert _upward() == {("config", "api")}
    assert _cycles() == [["gateway.api.b", "gateway.config.a"]]
