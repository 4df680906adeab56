"""Short, single-owner code paths: no function over 60 lines, no module over 450, in the shipped packages."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("api", "operator", "trainer_image", "cli")  # benchmarks and tests aside
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def shipped_modules() -> list[Path]:
    return sorted(p for root in SHIPPED for p in (REPO / root).rglob("*.py"))


def test_no_module_over_450_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in shipped_modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_60_lines() -> None:
    long = {}
    for path in shipped_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
