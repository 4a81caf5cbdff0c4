"""Schemathesis against a running API: every check, a fixed seed, a bounded number of examples per operation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import subprocess_env
from .live_api import live_api

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 13
MAX_EXAMPLES = 25


@pytest.mark.slow
def test_schemathesis_finds_no_contract_violation(tmp_path: Path) -> None:
    with live_api(tmp_path, worker=True) as api:
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
                "run", f"{api.url}/openapi.json",
                "--checks", "all",
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", str(SEED),
                "--generation-database", "none",
                "--workers", "1",
                "--request-timeout", "30",
            ],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )

    summary = run.stdout[run.stdout.find("SUMMARY"):]
    print(summary)
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-12000:]}\n{run.stderr[-2000:]}"
    assert re.search(r"Tested: 7\b", summary), "every documented operation was exercised"
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counts and int(counts[1]) == int(counts[2]) >= 7 * MAX_EXAMPLES, summary
