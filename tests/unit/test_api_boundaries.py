"""The house drawn from its imports: operator/ and trainer_image/ side by side on api/, no arrow between them;
cli/ (kubectl lft) on top, borrowing only the operator's object names and the trainer's storage code; the Python
client (lft_client) on top of the CLI's code, borrowing nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"lft_api": REPO / "api" / "lft_api", "lft_operator": REPO / "operator" / "lft_operator",
            "lft_trainer": REPO / "trainer_image" / "lft_trainer", "lft_cli": REPO / "cli" / "lft_cli",
            "lft_client": REPO / "cli" / "lft_client"}
STDLIB_AND_PYDANTIC = {"__future__", "json", "enum", "typing", "pathlib", "hashlib", "re", "pydantic",
                       "collections", "dataclasses", "datetime", "fnmatch", "posixpath", "urllib"}


def imported_modules(package_dir: Path, depth: int | None = None) -> dict[str, set[str]]:
    """{module imported (its first `depth` dotted parts): {files importing it}} for every module of a package."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(".".join(name.split(".")[:depth]), set()).add(path.name)
    return found


def imported_roots(package_dir: Path) -> dict[str, set[str]]:
    """{top-level module imported: {files importing it}} for every module of a package."""
    return imported_modules(package_dir, 1)


@pytest.mark.parametrize(("package", "forbidden"), [("lft_operator", "lft_trainer"), ("lft_trainer", "lft_operator")])
def test_operator_and_trainer_do_not_import_each_other(package: str, forbidden: str) -> None:
    roots = imported_roots(PACKAGES[package])
    assert forbidden not in roots, f"{package} imports {forbidden} in {sorted(roots.get(forbidden, ()))}"
    assert "lft_api" in roots, f"{package} should build on lft_api"


def test_api_imports_only_pydantic_and_the_standard_library() -> None:
    roots = imported_roots(PACKAGES["lft_api"])
    assert set(roots) - {"lft_api"} <= STDLIB_AND_PYDANTIC, sorted(set(roots) - STDLIB_AND_PYDANTIC - {"lft_api"})


# The CLI runs on a laptop with the user's credentials: the resource's models (lft_api), the names of the objects
# the operator creates and labels it sets (builders, views) and the trainer's storage code (one S3 client, the same retries), nothing more.
CLI_FIRST_PARTY = {"lft_api", "lft_operator.builders", "lft_operator.views", "lft_trainer.errors", "lft_trainer.storage.retry",
                   "lft_trainer.storage.store"}
CLI_THIRD_PARTY = {"kubernetes", "urllib3"}  # urllib3: the kubernetes client's HTTP library (its errors)
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "kopf", "matplotlib")


def test_cli_imports_only_the_api_the_operators_names_and_the_trainers_storage() -> None:
    modules = imported_modules(PACKAGES["lft_cli"])
    first_party = {"lft_api" if m.split(".")[0] == "lft_api" else m for m in modules if m.startswith("lft_")}
    assert first_party - {"lft_cli"} <= CLI_FIRST_PARTY, sorted(first_party - CLI_FIRST_PARTY)
    roots = {m.split(".")[0] for m in modules}
    stdlib = set(sys.stdlib_module_names)
    assert roots - stdlib - {"lft_api", "lft_operator", "lft_trainer", "lft_cli"} <= CLI_THIRD_PARTY


def test_cli_program_loads_no_training_or_operator_runtime() -> None:
    """`kubectl lft` starts without torch, transformers or kopf (the modules it reuses import them lazily)."""
    code = (f"import sys; import lft_cli.main, lft_cli.fetch, lft_cli.kube; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    paths = ":".join(str(REPO / p) for p in ("api", "operator", "trainer_image", "cli"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": paths},
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


# The Python client (lft_client) reuses the CLI's code for the connection, the resource, logs and storage: it borrows
# nothing from the operator or the trainer that lft_cli does not already wrap. tqdm is optional (imported lazily).
CLIENT_THIRD_PARTY = {"kubernetes", "pydantic", "tqdm"}


def test_client_builds_on_the_cli_and_the_api_only() -> None:
    modules = imported_modules(PACKAGES["lft_client"])
    roots = {m.split(".")[0] for m in modules}
    assert roots - set(sys.stdlib_module_names) - {"lft_api", "lft_cli", "lft_client"} <= CLIENT_THIRD_PARTY, sorted(roots)
    assert not {m for m in modules if m.startswith(("lft_operator", "lft_trainer"))}


def test_client_loads_no_training_or_operator_runtime() -> None:
    code = f"import sys; import lft_client; print(sorted(m for m in {HEAVY + ('tqdm',)!r} if m in sys.modules))"
    paths = ":".join(str(REPO / p) for p in ("api", "operator", "trainer_image", "cli"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": paths},
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
