"""The storage factory: settings and location URLs to stores, with errors that name what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.storage import LocalStore, StorageConfigError
from app.storage.emulators import Azurite, FakeGcsServer
from app.storage.factory import Location, build_store, open_location, parse_location

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_gcp_backend_without_bucket_names_gcs_bucket() -> None:
    with pytest.raises(StorageConfigError, match="GCS_BUCKET"):
        build_store("gcp")


def test_azure_backend_without_container_names_azure_container() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_CONTAINER"):
        build_store("azure", azure_connection_string="UseDevelopmentStorage=true")


def test_azure_backend_without_account_names_both_variables() -> None:
    with pytest.raises(StorageConfigError) as caught:
        build_store("azure", azure_container="c")

    assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value)
    assert "AZURE_STORAGE_ACCOUNT_URL" in str(caught.value)


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(StorageConfigError, match="local, gcp, azure"):
        build_store("s3")


def test_local_backend_builds_a_local_store(tmp_path) -> None:
    store = build_store("LOCAL", local_path=str(tmp_path / "data"))

    assert isinstance(store, LocalStore)
    assert store.url == f"file://{tmp_path / 'data'}"


@pytest.mark.emulator
def test_cloud_backends_build_from_settings(fake_gcs: FakeGcsServer, azurite: Azurite) -> None:
    gcs = build_store("gcp", gcs_bucket="bucket-a", gcs_project=fake_gcs.project)
    azure = build_store("azure", azure_container="container-b", azure_connection_string=azurite.connection_string)

    assert (type(gcs).__name__, gcs.url) == ("GcsStore", "gs://bucket-a")
    assert (type(azure).__name__, azure.url) == ("AzureBlobStore", "az://container-b")
    gcs.close()
    azure.close()


def test_open_location_for_azure_without_env_names_both_variables() -> None:
    with pytest.raises(StorageConfigError) as caught:
        open_location("az://container/prefix", env={})

    assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value)
    assert "AZURE_STORAGE_ACCOUNT_URL" in str(caught.value)


@pytest.mark.emulator
def test_open_location_returns_store_and_prefix(fake_gcs: FakeGcsServer, azurite: Azurite, tmp_path) -> None:
    gcs, gcs_prefix = open_location("gs://bucket-a/some/prefix", env=fake_gcs.env)
    azure, azure_prefix = open_location("az://container-b/p", env=azurite.env)
    local, local_prefix = open_location(f"file://{tmp_path}")

    assert (gcs.url, gcs_prefix) == ("gs://bucket-a", "some/prefix/")
    assert (azure.url, azure_prefix) == ("az://container-b", "p/")
    assert (local.url, local_prefix) == (f"file://{tmp_path}", "")


def test_open_location_on_missing_directory_is_a_config_error(tmp_path) -> None:
    with pytest.raises(StorageConfigError, match="does not exist"):
        open_location(f"file://{tmp_path}/nope")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("gs://bucket", Location("gs", "bucket", "")),
        ("gs://bucket/", Location("gs", "bucket", "")),
        ("gs://bucket/a/b", Location("gs", "bucket", "a/b/")),
        ("gs://bucket/a/b/", Location("gs", "bucket", "a/b/")),
        ("az://container/with space", Location("az", "container", "with space/")),
        ("az://container/keep#v2", Location("az", "container", "keep#v2/")),
        ("gs://bucket/what?now/50%", Location("gs", "bucket", "what?now/50%/")),
        ("AZ://container/p", Location("az", "container", "p/")),
        ("file:///tmp/store", Location("file", "/tmp/store", "")),
    ],
)
def test_parse_location_accepts_valid_urls(url: str, expected: Location) -> None:
    assert parse_location(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://", "missing bucket name"),
        ("az:///prefix", "missing container name"),
        ("s3://bucket", "unsupported location"),
        ("bucket/path", "unsupported location"),
        ("file://", "needs a path"),
    ],
)
def test_parse_location_rejects_invalid_urls(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        parse_location(url)


def test_location_prints_back_as_a_url() -> None:
    assert str(parse_location("gs://bucket/a/b")) == "gs://bucket/a/b/"
    assert str(parse_location("az://container")) == "az://container"


def test_importing_the_package_does_not_load_cloud_sdks() -> None:
    code = (
        "import sys, app.storage, app.storage.factory\n"
        "def sdks(): return sorted(m for m in ('google.cloud.storage', 'azure.storage.blob') if m in sys.modules)\n"
        "print(sdks())\n"
        "print(app.storage.GcsStore.__module__, app.storage.AzureBlobStore.__module__, sdks())\n"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)

    before, after = out.stdout.strip().splitlines()
    assert before == "[]"
    assert after == "app.storage.gcs app.storage.azure ['azure.storage.blob', 'google.cloud.storage']"
