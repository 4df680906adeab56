"""The house drawn from its imports: operator/ and trainer_image/ side by side on api/, no arrow between them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"lft_api": REPO / "api" / "lft_api", "lft_operator": REPO / "operator" / "lft_operator",
            "lft_trainer": REPO / "trainer_image" / "lft_trainer"}
STDLIB_AND_PYDANTIC = {"__future__", "json", "enum", "typing", "pathlib", "hashlib", "re", "pydantic",
                       "collections", "dataclasses", "datetime", "fnmatch", "posixpath", "urllib"}


def imported_roots(package_dir: Path) -> dict[str, set[str]]:
    """{top-level module imported: {files importing it}} for every module of a package."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("lft_operator", "lft_trainer"), ("lft_trainer", "lft_operator")])
def test_operator_and_trainer_do_not_import_each_other(package: str, forbidden: str) -> None:
    roots = imported_roots(PACKAGES[package])
    assert forbidden not in roots, f"{package} imports {forbidden} in {sorted(roots.get(forbidden, ()))}"
    assert "lft_api" in roots, f"{package} should build on lft_api"


def test_api_imports_only_pydantic_and_the_standard_library() -> None:
    roots = imported_roots(PACKAGES["lft_api"])
    assert set(roots) - {"lft_api"} <= STDLIB_AND_PYDANTIC, sorted(set(roots) - STDLIB_AND_PYDANTIC - {"lft_api"})
