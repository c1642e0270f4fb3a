"""The page's assets committed in the package are what `web/` builds today, and web/'s own unit tests
(Vitest) pass. Needs Node.js and npm (as on every development machine and in CI)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser.conftest import REQUIRED

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
COMMITTED = REPO / "src" / "innominatus" / "web_assets"


@pytest.fixture(scope="module")
def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        if REQUIRED:
            pytest.fail("npm is required here to check the web page's build")
        pytest.skip("npm is not installed")
    if not (WEB / "node_modules").is_dir():
        subprocess.run([found, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=600)
    return found


def _differences(left: Path, right: Path) -> list[str]:
    compared = filecmp.dircmp(left, right)
    found = [f"only in the build: {n}" for n in compared.left_only]
    found += [f"only committed: {n}" for n in compared.right_only]
    found += [f"differs: {n}" for n in compared.diff_files]
    for name in compared.common_dirs:
        found += [f"{name}/{d}" for d in _differences(left / name, right / name)]
    return found


def test_committed_assets_are_the_build_of_web(npm: str, tmp_path: Path) -> None:
    out = tmp_path / "web_assets"
    env = {**os.environ, "INNOMINATUS_WEB_OUT": str(out)}
    subprocess.run([npm, "run", "build"], cwd=WEB, env=env, check=True, timeout=600, capture_output=True)
    differences = _differences(out, COMMITTED)
    assert not differences, (
        "src/innominatus/web_assets is not the build of web/: run `npm run build` in web/ and commit: "
        + ", ".join(differences)
    )


def test_web_unit_tests(npm: str) -> None:
    result = subprocess.run(
        [npm, "test", "--silent"], cwd=WEB, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
