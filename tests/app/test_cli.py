"""The CLI: fast start-up, the worker command, and the local demo end to end."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from app.cli import cli
from app.queue import Queue
from app.storage import LocalStore

from .conftest import CLI, subprocess_env
from .images import png_bytes


def test_help_lists_the_workload_commands_without_heavy_imports() -> None:
    probe = (
        "import sys; from app.cli import cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'PIL', 'google.cloud.storage', 'azure.storage.blob') "
        "if m in sys.modules))"
    )

    result = subprocess.run([*CLI[:2], probe], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    help_text = CliRunner().invoke(cli, ["--help"]).output

    assert result.stdout.strip() == "[]", result.stderr
    for command in ("api", "worker", "demo"):
        assert re.search(rf"\b{command}\b", help_text)


def test_worker_burst_command_processes_the_queue_and_exits_0(local_store: LocalStore) -> None:
    job = Queue(local_store).submit(png_bytes((30, 20)), "in.png", "image/png")
    env = {"STORAGE_BACKEND": "local", "LOCAL_STORAGE_PATH": str(local_store.root), "WORKER_POLL_SECONDS": "0.05"}

    result = CliRunner().invoke(cli, ["worker", "--burst"], env=env)

    assert result.exit_code == 0, result.output
    assert Queue(local_store).get(job["id"])["status"] == "done"


def test_demo_runs_api_and_worker_and_prints_grayscale_results(tmp_path: Path) -> None:
    store_dir = tmp_path / "demo-store"

    result = subprocess.run(
        [*CLI, "demo", "--store-dir", str(store_dir), "--timeout", "60"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "415 not an image" in result.stdout
    paths = re.findall(r"\bdone\s+(\S+\.png)$", result.stdout, flags=re.MULTILINE)
    assert len(paths) == 4, result.stdout
    for path in paths:
        assert Path(path).parent == store_dir / "results"
        image = Image.open(io.BytesIO(Path(path).read_bytes()))
        assert (image.format, image.mode) == ("PNG", "L")
