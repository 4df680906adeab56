"""Paths of the chart and of the tools the tests run: helm (the chart's unit and integration tests), and the
Go tools hack/build-from-modules.sh builds into $LFT_CACHE (krew, actionlint)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lora-finetune-operator"


def find_helm() -> str | None:
    for candidate in (os.environ.get("LFT_HELM"), "/var/cache/lft/bin/helm", shutil.which("helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


HELM = find_helm()


CACHE = Path(os.environ.get("LFT_CACHE", "/var/cache/lft"))


def go_tool(component: str, version: str, binary: str) -> Path | None:
    """A binary of hack/build-from-modules.sh COMPONENT (cached under $LFT_CACHE/COMPONENT/VERSION), if built."""
    path = CACHE / component / version / binary
    return path if os.access(path, os.X_OK) else None
