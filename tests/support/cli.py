"""Run the command-line companion the way a user does: as a program in its own process.

- `run_lft(...)`: `python -m lft_cli ...` with the repository's sources, a clean environment (no AWS_*
  variables unless given: storage credentials must come from the run's Secret) and the given kubeconfig.
- `install_cli(dir)`: `pip install` of this project (no dependencies: the venv has them) into dir, so
  that the console scripts `lft` and `kubectl-lft` that pyproject.toml declares exist as a user gets them;
  with dir/bin on PATH, `kubectl lft ...` runs the plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("api", "operator", "trainer_image", "cli")
PACKAGES = {"api": "lft_api", "operator": "lft_operator", "trainer_image": "lft_trainer", "cli": "lft_cli"}


def clean_env(kubeconfig: str, home: Path, **extra: str) -> dict[str, str]:
    """PATH, HOME (empty: no ~/.aws or ~/.kube to fall back on), KUBECONFIG; no AWS_* unless in extra."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "KUBECONFIG": kubeconfig,
            "AWS_EC2_METADATA_DISABLED": "true", **extra}


def run_lft(*args: str, kubeconfig: str, home: Path, timeout: float = 120, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess:
    full = clean_env(kubeconfig, home, PYTHONPATH=":".join(str(REPO / s) for s in SOURCES), **env)
    return subprocess.run([sys.executable, "-m", "lft_cli", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=cwd or home)


def install_cli(target: Path) -> Path:
    """pip-install the project from a copy of its sources (the build writes build/ and *.egg-info next to
    them) into target; returns target/bin, which holds `lft` and `kubectl-lft`."""
    src = target.parent / "lft-src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    for folder, package in PACKAGES.items():
        shutil.copytree(REPO / folder / package, src / folder / package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(src)], check=True, capture_output=True, text=True, timeout=300)
    return target / "bin"
