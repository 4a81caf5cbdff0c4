"""Shared fixtures: the storage emulators on loopback, one store per backend, and Pulumi mocks.

fake-gcs-server and Azurite start once per test session on free 127.0.0.1
ports; every test that asks for a store gets a fresh bucket or container, so
tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from app.storage import LocalStore, ObjectStore
from app.storage.emulators import Azurite, FakeGcsServer, environment

if TYPE_CHECKING:
    from tests.infra.pulumi_mocks import SpotshiftMocks


def unique_name(prefix: str) -> str:
    """A bucket/container name valid on both clouds (lowercase, digits, dashes, 3-63 chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mocks() -> Iterator["SpotshiftMocks"]:
    """Fresh recording Pulumi mocks (stack `test`) and empty config for one test."""
    from tests.infra import pulumi_mocks

    recorder = pulumi_mocks.install()
    pulumi_mocks.set_config({})
    yield recorder
    pulumi_mocks.set_config({})


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    """fake-gcs-server for the whole session; google-cloud-storage is pointed at it via env."""
    with FakeGcsServer() as server, environment(server.env):
        yield server


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite's blob service for the whole session."""
    with Azurite() as server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGcsServer) -> str:
    """A new, empty bucket in fake-gcs-server."""
    name = unique_name("gcs")
    fake_gcs.create_bucket(name)
    return name


@pytest.fixture
def azure_container(azurite: Azurite) -> str:
    """A new, empty container in Azurite."""
    name = unique_name("az")
    azurite.create_container(name)
    return name


@pytest.fixture
def local_store(tmp_path) -> Iterator[LocalStore]:
    """A LocalStore on a fresh temporary directory."""
    store = LocalStore(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture
def gcs_store(fake_gcs: FakeGcsServer, gcs_bucket: str) -> Iterator[ObjectStore]:
    """A GcsStore on a fresh fake-gcs-server bucket."""
    from app.storage.gcs import GcsStore

    store = GcsStore(gcs_bucket, project=fake_gcs.project)
    yield store
    store.close()


@pytest.fixture
def azure_store(azurite: Azurite, azure_container: str) -> Iterator[ObjectStore]:
    """An AzureBlobStore on a fresh Azurite container."""
    from app.storage.azure import AzureBlobStore

    store = AzureBlobStore(azure_container, connection_string=azurite.connection_string)
    yield store
    store.close()


@pytest.fixture(params=["local", "gcs", "azure"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn: the contract every ObjectStore must keep."""
    return request.getfixturevalue(f"{request.param}_store")
