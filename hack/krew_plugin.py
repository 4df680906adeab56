"""The krew plugin of `kubectl lft`: its archive and its manifest (krew.googlecontainertools.github.com/v1alpha2).

    python hack/krew_plugin.py --version 0.2.0 --url-base https://github.com/OWNER/REPO/releases/download/v0.2.0 \
        --homepage https://github.com/OWNER/REPO --out _out/release

writes <out>/kubectl-lft-<version>.tar.gz and <out>/lft.yaml (the manifest for krew-index, its sha256 that of
the archive). The CLI is Python: the archive holds the project's wheel, the CLI's pinned requirements, the
LICENSE and a launcher, `kubectl-lft`, which on first use makes a virtualenv under
${XDG_CACHE_HOME:-~/.cache}/kubectl-lft/<version> (Python 3.11 or later; the requirements from the user's
package index) and then runs `python -m lft_cli` from it. One archive serves linux and darwin, amd64 and arm64.
tests/unit/test_krew_plugin.py validates the manifest with krew's own validator and installs the archive
with krew.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "lft"
ARCHIVE_ROOT = "kubectl-lft"
SHORT_DESCRIPTION = "Follow LoRA fine-tuning runs and pull their adapters"
DESCRIPTION = """\
The command-line companion of the lora-finetune-operator (LoRAFineTune resources, finetune.dev/v1alpha1):
  kubectl lft status RUN    phase, progress, eval loss before and after, the artifacts
  kubectl lft logs RUN      the trainer's log
  kubectl lft wait RUN      until the run Succeeded (exit 0) or Failed (1)
  kubectl lft plot RUN      download the loss curve (loss.png)
  kubectl lft pull RUN      download the adapter, verified file by file
  kubectl lft samples RUN   held-out prompts: the base model's answer next to the tuned one's
"""
CAVEATS = """\
kubectl lft is written in Python: it needs python3 (3.11 or later) on PATH. Its first run installs
the CLI and its pinned dependencies into ~/.cache/kubectl-lft/<version> from your package index
(set KUBECTL_LFT_VENV to put the virtualenv elsewhere).
"""

LAUNCHER = """\
#!/bin/sh
# kubectl lft (krew): the CLI from the wheel next to this script, in a virtualenv of its own, made on first use.
set -eu
version=@VERSION@
py=${KUBECTL_LFT_PYTHON:-python3}
command -v "$py" >/dev/null 2>&1 || { echo "kubectl lft: needs python3 (3.11 or later) on PATH" >&2; exit 3; }
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "kubectl lft: needs Python 3.11 or later; $py is $("$py" -V 2>&1)" >&2; exit 3; }
# krew links this script into its bin/: the wheel lies next to the real file.
here=$("$py" -c 'import os, sys; print(os.path.dirname(os.path.realpath(sys.argv[1])))' "$0")
venv=${KUBECTL_LFT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-lft/$version}
if [ ! -f "$venv/.kubectl-lft-$version" ]; then
  echo "kubectl lft: installing the CLI into $venv (first run)" >&2
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  [ -f "$venv/.requirements-installed" ] ||
    { "$venv/bin/python" -m pip install -q -r "$here/requirements-cli.txt" && touch "$venv/.requirements-installed"; }
  "$venv/bin/python" -m pip install -q --no-deps --no-index --force-reinstall "$here"/*.whl
  touch "$venv/.kubectl-lft-$version"
fi
exec "$venv/bin/python" -m lft_cli "$@"
"""


def cli_requirements() -> list[str]:
    """cli/requirements.txt with each name pinned to the version of its constraints files (the images' pins)."""
    pins: dict[str, str] = {}
    names: list[str] = []
    for line in (REPO / "cli" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-c "):
            for pinned in (REPO / "cli" / line[3:].strip()).resolve().read_text().splitlines():
                match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", pinned.strip())
                if match:
                    pins.setdefault(match[1].lower(), match[3])
        elif line:
            names.append(line)
    missing = [n for n in names if n.lower() not in pins]
    if missing:
        raise SystemExit(f"krew_plugin: no pinned version for {missing} in cli/requirements.txt's constraints")
    return [f"{n}=={pins[n.lower()]}" for n in names]


def build_wheel(out: Path) -> Path:
    """From a copy of the sources (setuptools writes build/ and *.egg-info next to pyproject.toml)."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy(REPO / name, src)
    for root in ("api", "operator", "trainer_image", "cli"):
        shutil.copytree(REPO / root, src / root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=600)
    (wheel,) = out.glob("lora_finetune_operator-*.whl")
    return wheel


def archive(version: str, wheel: Path, dest: Path) -> Path:
    """A reproducible tar.gz (fixed order, owner and mtime): the same inputs give the same sha256."""
    files = {
        "kubectl-lft": (LAUNCHER.replace("@VERSION@", version).encode(), 0o755),
        "requirements-cli.txt": (("\n".join(cli_requirements()) + "\n").encode(), 0o644),
        "LICENSE": ((REPO / "LICENSE").read_bytes(), 0o644),
        wheel.name: (wheel.read_bytes(), 0o644),
    }
    path = dest / f"kubectl-lft-{version}.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data, mode = files[name]
            info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return path


def manifest(version: str, uri: str, sha256: str, homepage: str) -> str:
    def block(text: str, indent: str = "    ") -> str:
        return "\n".join(indent + line for line in text.rstrip("\n").splitlines())

    return f"""apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: {NAME}
spec:
  version: v{version}
  homepage: {homepage}
  shortDescription: {SHORT_DESCRIPTION}
  description: |
{block(DESCRIPTION)}
  caveats: |
{block(CAVEATS)}
  platforms:
  - selector:
      matchExpressions:
      - key: os
        operator: In
        values: [linux, darwin]
    uri: {uri}
    sha256: {sha256}
    files:
    - from: {ARCHIVE_ROOT}/*
      to: .
    bin: kubectl-lft
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", required=True)
    parser.add_argument("--url-base", required=True, help="where the archive will be downloaded from (no trailing /)")
    parser.add_argument("--homepage", required=True)
    parser.add_argument("--out", type=Path, default=REPO / "_out" / "release")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", args.version):
        parser.error(f"--version {args.version} is not SemVer")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        path = archive(args.version, wheel, Path(tmp))
        final = args.out / path.name
        shutil.copy(path, final)
    sha256 = hashlib.sha256(final.read_bytes()).hexdigest()
    (args.out / f"{NAME}.yaml").write_text(manifest(args.version, f"{args.url_base}/{final.name}", sha256,
                                                    args.homepage))
    print(f"{final} sha256 {sha256}\n{args.out / f'{NAME}.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
