"""The emulator launcher: start-up failures explain themselves, both Azurite modes start."""

from __future__ import annotations

import pytest

from app.storage.azure import AzureBlobStore
from app.storage.emulators import Azurite, EmulatorError, FakeGcsServer

pytestmark = pytest.mark.emulator


def test_emulator_that_exits_at_start_up_reports_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_GCS_SERVER_BIN", "/bin/false")

    with pytest.raises(EmulatorError, match=r"fake-gcs-server exited during start-up \(code 1\)"):
        FakeGcsServer().start()


def test_in_memory_azurite_starts_and_serves_blobs() -> None:
    with Azurite(in_memory=True) as azurite:
        azurite.create_container("in-memory")
        store = AzureBlobStore("in-memory", connection_string=azurite.connection_string)

        store.put("k", b"kept in memory")

        assert store.get("k") == b"kept in memory"
        store.close()


def test_cpu_seconds_counts_what_serving_requests_cost_the_emulator(azurite: Azurite) -> None:
    azurite.create_container("cpu-seconds")
    store = AzureBlobStore("cpu-seconds", connection_string=azurite.connection_string)
    before = azurite.cpu_seconds()

    for i in range(300):
        store.put(f"k{i:03d}", b"x")
    assert len(list(store.list())) == 300

    assert azurite.cpu_seconds() > before > 0
    store.close()


def test_cpu_seconds_of_an_emulator_that_is_not_running_is_an_error() -> None:
    with pytest.raises(EmulatorError, match="azurite is not running"):
        Azurite().cpu_seconds()
