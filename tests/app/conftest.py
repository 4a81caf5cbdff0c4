"""Fixtures for the workload tests: hermetic settings, a queue on a LocalStore, an API client."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.queue import Queue
from app.settings import Settings
from app.storage import LocalStore, ObjectStore, TransientStorageError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests happen to run in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_settings(local_store: LocalStore) -> Callable[..., Settings]:
    """Build Settings for tests: local backend on ``local_store``, fast polling; overrides as keywords."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_PATH": str(local_store.root),
            "WORKER_ID": "test-worker",
            "WORKER_POLL_SECONDS": 0.02,
            "WORKER_GRACE_SECONDS": 5,
            "LEASE_SECONDS": 60,
            "MAX_ATTEMPTS": 3,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default test settings."""
    return make_settings()


@pytest.fixture
def queue(local_store: LocalStore) -> Queue:
    """A queue on the test's LocalStore."""
    return Queue(local_store, lease_seconds=60, max_attempts=3)


class FakeClock:
    """A clock the test moves by hand, for lease expiry without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A hand-driven clock."""
    return FakeClock()


class DownStore(ObjectStore):
    """A store whose every call fails as if the network were gone."""

    scheme = "down"

    @property
    def url(self) -> str:
        return "down://nowhere"

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise TransientStorageError("connection reset by peer")

    put = stream = head = list = delete = ping = _fail  # type: ignore[assignment]


@pytest.fixture
def down_store() -> DownStore:
    """A store that is unreachable."""
    return DownStore()


def subprocess_env(**values: Any) -> dict[str, str]:
    """Environment for a spotshift subprocess: the repo importable, the given settings, nothing else leaking."""
    env = {key: value for key, value in os.environ.items() if key not in Settings.model_fields}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update({key: str(value) for key, value in values.items()})
    return env


#: Runs the CLI's Typer app in a subprocess, without the migration commands.
CLI = [sys.executable, "-c", "from app.cli import cli; cli()"]


@pytest.fixture
def client_for(settings: Settings, local_store: LocalStore) -> Iterator[Callable[..., Any]]:
    """Make a TestClient for an app built from settings (overrides as keywords) on ``local_store``."""
    from fastapi.testclient import TestClient

    from app.api import create_app
    from app.api.deps import get_store

    clients = []

    def make(store: ObjectStore | None = None, **overrides: Any) -> TestClient:
        app = create_app(settings.model_copy(update=overrides), store=local_store)
        if store is not None:
            app.dependency_overrides[get_store] = lambda: store
        client = TestClient(app)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(client_for: Callable[..., Any]) -> Any:
    """A TestClient for the API on the test's LocalStore."""
    return client_for()
