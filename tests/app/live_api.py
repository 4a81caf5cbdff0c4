"""The API (and optionally a worker) as real processes on loopback, for the fuzz and browser tests."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.storage.emulators import free_port

from .conftest import CLI, subprocess_env

#: Seconds a process may take to start answering (the machine is shared and slow).
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class LiveApi:
    """A running ``spotshift api``: its base URL and the store directory behind it."""

    url: str
    store: Path


def _wait_until_healthy(url: str, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"spotshift api exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"spotshift api did not answer /healthz within {START_TIMEOUT} s:\n{log.read_text()}")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def live_api(workdir: Path, *, worker: bool = False, **settings: Any) -> Iterator[LiveApi]:
    """Run ``spotshift api`` on a free loopback port over a local store in ``workdir`` (and a worker)."""
    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(
        STORAGE_BACKEND="local", LOCAL_STORAGE_PATH=store, LOG_LEVEL="WARNING", WORKER_POLL_SECONDS=0.2,
        WORKER_ID="live-worker", **settings,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        api_log = workdir / "api.log"
        api = stack.enter_context(
            _process([*CLI, "api", "--host", "127.0.0.1", "--port", str(port)], env, stack.enter_context(api_log.open("wb")))
        )
        if worker:
            stack.enter_context(_process([*CLI, "worker"], env, stack.enter_context((workdir / "worker.log").open("wb"))))
        _wait_until_healthy(url, api, api_log)
        yield LiveApi(url=url, store=store)
