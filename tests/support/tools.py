"""Paths of the chart and the helm binary, shared by the chart's unit and integration tests."""

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
