"""The packages' import structure: no import circle anywhere (every import counts: module level, inside a
function, under TYPE_CHECKING), and no private name (a leading underscore) crosses a module boundary.

Each rule is checked on the source with ast, so a circle that Python tolerates at run time (a function-level
import, a TYPE_CHECKING import) still fails here: it is the design that must not have one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"lft_api": ROOT / "api", "lft_operator": ROOT / "operator", "lft_trainer": ROOT / "trainer_image",
            "lft_cli": ROOT / "cli", "lft_client": ROOT / "cli"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(imported module, the names taken from it) for each import of ours in `node`."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.split(".")[0] in PACKAGES]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] not in PACKAGES:
        return []
    out: list[tuple[str, list[str]]] = []
    names = []
    for alias in node.names:
        if f"{target}.{alias.name}" in MODULES:  # `from . import queue`: the submodule itself
            out.append((f"{target}.{alias.name}", []))
        else:
            names.append(alias.name)
    if names:
        out.append((target, names))
    return out


def imports() -> dict[str, list[tuple[str, list[str], int]]]:
    """module -> [(imported module, names, line)], every import statement anywhere in the module."""
    graph: dict[str, list[tuple[str, list[str], int]]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = graph.setdefault(name, [])
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, names in resolve(name, path.name == "__init__.py", node):
                    edges.append((target, names, node.lineno))
    return graph


def circles(graph: dict[str, list[tuple[str, list[str], int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in graph.get(v, []):
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
            if len(component) > 1 or any(t == v for t, _, _ in graph.get(v, [])):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_circle(package):
    graph = imports()
    mine = {m: edges for m, edges in graph.items() if m.split(".")[0] == package}
    found = circles(mine)
    assert not found, "import circles:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(
            f"{m}:{line} imports {t}" for m in c for t, _, line in graph[m] if t in c) for c in found)


def test_no_private_name_crosses_a_module_boundary():
    """`from x import _name`, and `x._name` where x is one of our modules imported by name."""
    crossings = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, names in resolve(name, path.name == "__init__.py", node):
                    if target == name:
                        continue
                    crossings += [f"{name}:{node.lineno} imports {target}.{n}" for n in names
                                  if n.startswith("_") and not n.startswith("__")]
                    if not names:  # a module bound to a name: `from . import queue`, `import lft_api.contract`
                        for alias in node.names:
                            aliases[alias.asname or alias.name.split(".")[-1]] = target
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossings.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not crossings, "private names used across modules:\n" + "\n".join(crossings)


def test_the_checks_catch_what_they_look_for():
    """The rules' own test: a made-up circle and a made-up crossing are found."""
    graph = {"p.a": [("p.b", [], 1)], "p.b": [("p.c", [], 1)], "p.c": [("p.a", ["_x"], 1)], "p.d": [("p.a", [], 1)]}
    assert circles(graph) == [["p.a", "p.b", "p.c"]]
    node = ast.parse("from .decide import _succeeded, public").body[0]
    assert resolve("lft_operator.status.gang", False, node) == [("lft_operator.status.decide", ["_succeeded", "public"])]
