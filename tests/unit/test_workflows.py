"""The CI workflows under .github/workflows pass actionlint (v1.7.12, built from the Go module proxy by
hack/build-from-modules.sh actionlint, run by tests/cluster/install-tools.sh): syntax, expressions, job needs,
action inputs, untrusted input in `run:`. Without it this skips, or fails with LFT_REQUIRE_TOOLS=1."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.tools import ROOT, go_tool

ACTIONLINT = go_tool("actionlint", "1.7.12", "actionlint")
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="module")
def actionlint() -> str:
    if ACTIONLINT is None:
        if os.environ.get("LFT_REQUIRE_TOOLS") == "1":
            pytest.fail("actionlint not built (bash hack/build-from-modules.sh actionlint)")
        pytest.skip("actionlint not built (bash hack/build-from-modules.sh actionlint)")
    return str(ACTIONLINT)


def lint(actionlint: str, *paths) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-no-color", "-shellcheck=", "-pyflakes=", *map(str, paths)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_release_workflow_exists_and_passes_actionlint(actionlint) -> None:
    assert [p.name for p in WORKFLOWS] == ["release.yml"]
    done = lint(actionlint, *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_refuses_untrusted_input_in_a_script(actionlint, tmp_path) -> None:
    """The check can fail: a workflow that expands a pull request's title in a script is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - run: echo \"${{ github.event.pull_request.title }}\"\n")
    done = lint(actionlint, bad)
    assert done.returncode != 0 and "potentially untrusted" in done.stdout, done.stdout
