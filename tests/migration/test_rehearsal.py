"""``spotshift rehearse`` end to end: real emulators, real API and worker processes, the provider's code path."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def clean_env() -> dict[str, str]:
    """This environment without storage settings: the rehearsal must bring its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GCS_", "STORAGE_"))}


def rehearse(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run the real command in a subprocess, as `make demo` does; return it and its JSON report."""
    completed = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "rehearse", "--report-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**clean_env(), "COLUMNS": "200"},
    )
    report_path = tmp_path / "rehearsal-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return completed, report


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def emulator_ports(stdout: str) -> list[int]:
    found = [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", stdout)]
    assert len(found) >= 2, stdout
    return found


def test_rehearsal_migrates_every_job_and_reports_it(tmp_path):
    completed, report = rehearse(tmp_path, "--jobs", "8", "--queued", "2")

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert report["passed"] is True and report["error"] == ""
    assert [phase["name"] for phase in report["phases"]] == ["emulators", "gcp", "sync", "cutover", "azure"]
    assert all(phase["ok"] for phase in report["phases"])
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    jobs = report["jobs"]
    assert jobs["submitted_gcp"] == 8 and jobs["done_on_gcp"] == 6 and jobs["queued_on_gcp"] == 2
    assert jobs["migrated"] == 8 + jobs["submitted_during_sync"]
    assert jobs["finished_on_azure"] == 2 + jobs["submitted_during_sync"]
    assert jobs["new_on_azure"] == 3
    first, second, final = report["rounds"]
    # 6 done jobs are input + job + result, 2 queued ones input + job + marker, plus uploads during round 1.
    assert first["objects_copied"] >= 6 * 3 + 2 * 3 and first["objects_failed"] == 0 and first["verified"]
    assert 0 < second["objects_copied"] < first["objects_copied"]
    assert second["objects_skipped"] >= first["objects_copied"]
    assert final["objects_copied"] == 0 and final["verified"] is True
    assert report["digests"]["source"] == report["digests"]["target"] == final["manifest_digest"]
    html = (tmp_path / "rehearsal-report.html").read_text()
    assert "PASSED" in html and "<svg" in html and report["digests"]["source"] in html
    assert "REHEARSAL PASSED" in completed.stdout
    assert not any(listening(port) for port in emulator_ports(completed.stdout)), "emulators left running"


def test_a_silently_tampered_object_fails_the_cutover_loudly(tmp_path):
    completed, report = rehearse(tmp_path, "--jobs", "4", "--queued", "1", "--inject", "tamper")

    assert completed.returncode == 1, completed.stdout[-3000:]
    assert report["passed"] is False
    assert "cutover refused" in report["error"] and "results/" in report["error"]
    cutover = next(phase for phase in report["phases"] if phase["name"] == "cutover")
    assert cutover["ok"] is False
    assert "azure" not in [phase["name"] for phase in report["phases"]], "no Azure phase after a refused cutover"
    failed = [check["name"] for check in report["checks"] if not check["ok"]]
    assert failed == ["strict final sync"]
    assert "FAILED" in (tmp_path / "rehearsal-report.html").read_text()
    assert "REHEARSAL FAILED" in completed.stdout
    assert not any(listening(port) for port in emulator_ports(completed.stdout)), "emulators left running"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--inject", "bogus"], "--inject must be one of none, tamper"),
        (["--jobs", "4", "--queued", "4"], "--queued must be between 1 and jobs-1"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_start_nothing(tmp_path, args, message):
    completed, report = rehearse(tmp_path, *args)

    assert completed.returncode == 2
    assert message in completed.stdout + completed.stderr
    assert report == {}
