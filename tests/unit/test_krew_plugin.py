"""The krew plugin of `kubectl lft` (hack/krew_plugin.py): krew's own validator accepts its manifest, and krew
installs its archive, whose launcher then runs the CLI from the wheel inside.

krew v0.4.3 and its validate-krew-manifest are built from the Go module proxy (hack/build-from-modules.sh krew,
run by tests/cluster/install-tools.sh); without them this skips, or fails with LFT_REQUIRE_TOOLS=1.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.tools import ROOT, go_tool

KREW = go_tool("krew", "0.4.3", "krew")
VALIDATE = go_tool("krew", "0.4.3", "validate-krew-manifest")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    if KREW is None or VALIDATE is None:
        if os.environ.get("LFT_REQUIRE_TOOLS") == "1":
            pytest.fail("krew not built (bash hack/build-from-modules.sh krew)")
        pytest.skip("krew not built (bash hack/build-from-modules.sh krew)")
    out = tmp_path_factory.mktemp("krew")
    subprocess.run([sys.executable, str(ROOT / "hack" / "krew_plugin.py"), "--version", "0.2.0",
                    "--url-base", "https://github.com/lora-finetune/lora-finetune-operator/releases/download/v0.2.0",
                    "--homepage", "https://github.com/lora-finetune/lora-finetune-operator", "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


def test_krews_validator_accepts_the_manifest(plugin: Path) -> None:
    manifest = yaml.safe_load((plugin / "lft.yaml").read_text())
    (platform,) = manifest["spec"]["platforms"]
    archive = plugin / "kubectl-lft-0.2.0.tar.gz"
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert platform["uri"].endswith("/v0.2.0/kubectl-lft-0.2.0.tar.gz") and manifest["spec"]["version"] == "v0.2.0"
    done = subprocess.run([str(VALIDATE), "-manifest", str(plugin / "lft.yaml"), "-skip-install"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "structural validation OK" in done.stderr and "no overlapping" in done.stderr


def test_the_validator_refuses_a_broken_manifest(plugin: Path, tmp_path: Path) -> None:
    """The check can fail: a manifest whose name is not its file's, or with a bad sha256, is refused."""
    broken = yaml.safe_load((plugin / "lft.yaml").read_text())
    broken["spec"]["platforms"][0]["sha256"] = "not-a-digest"
    (tmp_path / "lft.yaml").write_text(yaml.safe_dump(broken))
    done = subprocess.run([str(VALIDATE), "-manifest", str(tmp_path / "lft.yaml"), "-skip-install"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "sha256" in done.stderr


def test_krew_installs_the_archive_and_the_launcher_runs_the_cli(plugin: Path, tmp_path: Path) -> None:
    with tarfile.open(plugin / "kubectl-lft-0.2.0.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == ["kubectl-lft/LICENSE", "kubectl-lft/kubectl-lft",
                     "kubectl-lft/lora_finetune_operator-0.2.0-py3-none-any.whl", "kubectl-lft/requirements-cli.txt"]
    # krew is a kubectl plugin itself: `kubectl krew` runs kubectl-krew.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl-krew").symlink_to(KREW)
    root = tmp_path / "krew"
    env = {**os.environ, "KREW_ROOT": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["kubectl-krew", "install", "--manifest", str(plugin / "lft.yaml"),
                           "--archive", str(plugin / "kubectl-lft-0.2.0.tar.gz")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    launcher = root / "bin" / "kubectl-lft"
    assert launcher.is_symlink() and (root / "store" / "lft" / "v0.2.0" / "LICENSE").exists()

    # The launcher's first run: its virtualenv, the pinned requirements already in it (here from this test's
    # venv through a .pth file: the package index is not the subject), then the wheel from the archive.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "zz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (venv / ".requirements-installed").touch()
    run_env = {**env, "KUBECTL_LFT_VENV": str(venv), "KUBECTL_LFT_PYTHON": sys.executable}
    done = subprocess.run([str(launcher), "--help"], env=run_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "status" in done.stdout and "samples" in done.stdout
    installed = subprocess.run([str(venv / "bin" / "python"), "-c", "import lft_cli; print(lft_cli.__file__)"],
                               capture_output=True, text=True, check=True).stdout
    assert installed.startswith(site), installed  # the CLI from the archive's wheel, not from the checkout
