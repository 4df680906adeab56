"""The wheel `pip install .` builds holds every package, module and data file, and imports from a fresh venv.

A hand-written package list once left lft_operator.status out: the images copy the sources, so only a user
installing the wheel (the CLI, a custom operator image) would have met the ImportError.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = {"lft_api": "api", "lft_trainer": "trainer_image", "lft_operator": "operator", "lft_cli": "cli",
           "lft_client": "cli"}


def _source_files() -> set[str]:
    """Every file of the five packages as a wheel names it (lft_operator/status/gang.py), caches left out."""
    files = set()
    for package, root in SOURCES.items():
        for path in (REPO / root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files.add(path.relative_to(REPO / root).as_posix())
    return files


def _build_wheel(tmp_path: Path) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info next to pyproject.toml.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "LICENSE", src)
    for root in sorted(set(SOURCES.values())):
        shutil.copytree(REPO / root, src / root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=300)
    (wheel,) = out.glob("*.whl")
    return wheel


def test_the_wheel_holds_every_module_and_imports_them_from_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_source_files() - names)
    assert not missing, f"left out of the wheel: {missing}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE in the wheel"

    # A fresh venv with the wheel installed by pip; the third-party packages come from the test venv's
    # site-packages through a .pth file, the project's own modules only from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    modules = sorted(
        name[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for name in names
        if name.endswith(".py") and not name.endswith("__main__.py")
    )
    script = (
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
        "print(len(sys.modules))\n"
    )
    done = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # The console scripts the wheel declares are installed too.
    assert (venv / "bin" / "lft").exists() and (venv / "bin" / "kubectl-lft").exists()
