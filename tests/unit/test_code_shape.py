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


def test_trainer_loggers_are_named_by_their_module() -> None:
    """logging.getLogger(__name__), so a log line names the module that wrote it (the entry point excepted: run as
    `python -m lft_trainer`, its __name__ is "__main__")."""
    by_hand = []
    for path in sorted((REPO / "trainer_image" / "lft_trainer").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("lft_trainer")):
                by_hand.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not by_hand, f"loggers named by hand (use __name__): {by_hand}"
