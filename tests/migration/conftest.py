"""Fixtures for the migration tests: seeded stores and a ``spotshift`` CLI runner on the emulators."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from app.storage import LocalStore, ObjectStore
from migration import copier

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The console script's code path: ``app.cli.main`` registers the migration commands.
SPOTSHIFT = [sys.executable, "-c", "from app.cli import main; main()"]

#: Keys that have broken copy tools before: spaces, unicode, '#', '%', deep prefixes, empty bodies.
AWKWARD = {
    "plain.txt": b"hello world\n",
    "with space/file name.txt": b"spaces " * 40,
    "unicode/caf\u00e9/\u00fcber-\u2713.bin": "\u00fcber \u2713".encode() * 10,
    "hash#and%percent/50%#1.dat": b"#%" * 300,
    "deep/a/b/c/d/e/f/g/leaf.json": b'{"deep": true}',
    "empty/zero-bytes": b"",
}


def seed(store: ObjectStore, objects: Mapping[str, bytes], *, prefix: str = "", **put_options) -> None:
    """Write each object under ``prefix`` with the given ``put`` options."""
    for key, data in objects.items():
        store.put(prefix + key, data, **put_options)


def contents(store: ObjectStore, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` as ``relative key -> bytes``."""
    return {info.key[len(prefix):]: store.get(info.key) for info in store.list(prefix)}


@pytest.fixture
def cli_env(fake_gcs, azurite) -> dict[str, str]:
    """Environment for a CLI subprocess pointed at both emulators (and nothing else)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GOOGLE_", "GCS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(fake_gcs.env)
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    return env


@pytest.fixture
def spotshift(cli_env) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``spotshift ARGS...`` in a subprocess on the emulators; ``env`` entries override (None removes)."""

    def run(
        *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(cli_env)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        return subprocess.run([*SPOTSHIFT, *args], env=full_env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout)

    return run


class WrappedStore(ObjectStore):
    """Delegates to a LocalStore; subclasses inject faults or hide fields."""

    scheme = "file"

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return self.inner.url

    def put(self, key, body, **kwargs):
        return self.inner.put(key, body, **kwargs)

    def stream(self, key, chunk_size=copier.STREAM_CHUNK):
        return self.inner.stream(key, chunk_size)

    def head(self, key):
        return self.inner.head(key)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def delete(self, key, **kwargs):
        return self.inner.delete(key, **kwargs)

    def ping(self):
        return self.inner.ping()
