"""AzureBlobStore behaviour beyond the shared contract: credentials, SAS, block uploads, error translation."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import google_crc32c
import pytest
from azure.identity import CredentialUnavailableError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from app.storage import (
    IntegrityError,
    ObjectNotFound,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from app.storage.azure import CRC32C_METADATA_KEY, AzureBlobStore
from app.storage.emulators import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, free_port
from tests.storage.stub_http import Reply, StubServer

pytestmark = pytest.mark.emulator

KIB = 1024


def crc32c_hex(data: bytes) -> str:
    """CRC32C as the stores report it (8 lowercase hex chars)."""
    return google_crc32c.Checksum(data).digest().hex()


def connection_string(endpoint: str, key: str = AZURITE_KEY) -> str:
    """A shared-key connection string for the emulator account at ``endpoint``."""
    return f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};BlobEndpoint={endpoint};"


@pytest.fixture
def small_block_store(azurite: Azurite, azure_container: str):
    """An AzureBlobStore that buffers up to 256 KiB, streams one Put Blob up to 512 KiB, else uses 256 KiB blocks."""
    store = AzureBlobStore(
        azure_container,
        connection_string=azurite.connection_string,
        buffer_max=256 * KIB,
        single_put_max=512 * KIB,
        block_size=256 * KIB,
    )
    yield store
    store.close()


@pytest.fixture
def sas_store(azurite: Azurite, azure_container: str):
    """An AzureBlobStore authenticated by a container SAS in its connection string."""
    sas = generate_container_sas(
        AZURITE_ACCOUNT,
        azure_container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, create=True, add=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    store = AzureBlobStore(
        azure_container, connection_string=f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
    )
    yield store
    store.close()


def stub_store(server: StubServer) -> AzureBlobStore:
    """An AzureBlobStore (no retries) whose Blob endpoint is the stub server."""
    return AzureBlobStore("stub", connection_string=connection_string(f"{server.url}/{AZURITE_ACCOUNT}"), retries=0)


# -- uploads -----------------------------------------------------------------------------


def test_block_upload_commits_with_md5_and_crc32c(small_block_store: AzureBlobStore) -> None:
    data = os.urandom(256 * KIB * 3 + 11)

    info = small_block_store.put("blocks", iter([data[:1000], data[1000:]]), metadata={"kind": "blocks"})

    head = small_block_store.head("blocks")
    listed = next(iter(small_block_store.list("blocks")))
    assert small_block_store.get("blocks") == data
    for seen in (info, head, listed):
        assert seen.md5 == hashlib.md5(data).hexdigest()
        assert seen.crc32c == crc32c_hex(data)
        assert seen.metadata == {"kind": "blocks"}
    assert head.version == info.version == listed.version


def test_block_upload_with_bad_checksum_leaves_nothing_visible(small_block_store: AzureBlobStore) -> None:
    data = os.urandom(256 * KIB * 3)
    small_block_store.put("kept", b"old")

    with pytest.raises(IntegrityError):
        small_block_store.put("kept", iter([data]), expected_md5=hashlib.md5(b"x").hexdigest())
    with pytest.raises(IntegrityError, match="declared size"):
        small_block_store.put("new", iter([data]), size=len(data) + 7)

    assert small_block_store.get("kept") == b"old"
    assert [info.key for info in small_block_store.list()] == ["kept"]


@pytest.mark.parametrize("declared", [300 * KIB, 400 * KIB], ids=["body-longer", "body-shorter"])
def test_streamed_put_with_wrong_size_hint_commits_nothing(small_block_store: AzureBlobStore, declared: int) -> None:
    data = os.urandom(350 * KIB)

    with pytest.raises(IntegrityError):
        small_block_store.put("streamed", iter([data[: 100 * KIB], data[100 * KIB :]]), size=declared)

    assert not small_block_store.exists("streamed")


def test_streamed_put_keeps_expected_crc32c(small_block_store: AzureBlobStore) -> None:
    data = os.urandom(400 * KIB)

    small_block_store.put("streamed", iter([data]), size=len(data), expected_crc32c=crc32c_hex(data).upper())

    assert small_block_store.head("streamed").crc32c == crc32c_hex(data)
    assert small_block_store.head("streamed").md5 == hashlib.md5(data).hexdigest()


def test_source_failure_mid_put_surfaces_unchanged(small_block_store: AzureBlobStore) -> None:
    def failing_source():
        yield os.urandom(300 * KIB)
        raise ObjectNotFound("gs://source/key: not found")

    with pytest.raises(ObjectNotFound, match="gs://source/key"):
        small_block_store.put("copy", failing_source(), size=450 * KIB)

    assert not small_block_store.exists("copy")


def test_crc32c_lives_in_reserved_metadata_hidden_from_callers(azure_store: AzureBlobStore, azurite: Azurite) -> None:
    azure_store.put("doc", b"payload", metadata={"owner": "me"})

    raw = (
        BlobServiceClient.from_connection_string(azurite.connection_string)
        .get_blob_client(azure_store.container_name, "doc")
        .get_blob_properties()
        .metadata
    )

    assert raw[CRC32C_METADATA_KEY] == crc32c_hex(b"payload")
    assert azure_store.head("doc").metadata == {"owner": "me"}
    with pytest.raises(ValueError, match="reserved"):
        azure_store.put("doc", b"x", metadata={CRC32C_METADATA_KEY: "00000000"})


def test_metadata_azure_cannot_store_as_is_round_trips_packed(azure_store: AzureBlobStore, azurite: Azurite) -> None:
    metadata = {"content-lang": "fr", "1starts_with_digit": "x", "note": "non-ascii é", "multi": "line\nbreak",
                "plain": "kept as it is"}

    azure_store.put("doc", b"x", metadata=metadata)
    raw = (
        BlobServiceClient.from_connection_string(azurite.connection_string)
        .get_blob_client(azure_store.container_name, "doc")
        .get_blob_properties()
        .metadata
    )

    assert azure_store.head("doc").metadata == metadata
    assert [info.metadata for info in azure_store.list("doc")] == [metadata]
    assert raw["plain"] == "kept as it is" and "spotshift_meta" in raw and "content-lang" not in raw
    with pytest.raises(ValueError, match="reserved"):
        azure_store.put("doc", b"x", metadata={"spotshift_meta": "forged"})


# -- credentials and secrets -----------------------------------------------------------------


def test_wrong_account_key_is_a_config_error(azurite: Azurite, azure_container: str) -> None:
    wrong_key = AZURITE_KEY[:-8] + "AAAAAAA="
    store = AzureBlobStore(azure_container, connection_string=connection_string(azurite.blob_endpoint, wrong_key))

    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_CONNECTION_STRING") as caught:
        store.ping()
    with pytest.raises(StorageConfigError):
        store.put("k", b"x")

    assert wrong_key not in str(caught.value)


def test_sas_connection_string_works_and_never_leaks(sas_store: AzureBlobStore) -> None:
    sas_store.ping()
    sas_store.put("dir/k", b"via sas", metadata={"a": "b"})

    with pytest.raises(ObjectNotFound) as caught:
        sas_store.head("absent")

    assert sas_store.get("dir/k") == b"via sas"
    assert [info.key for info in sas_store.list("dir/")] == ["dir/k"]
    sas_store.delete("dir/k")
    for text in (sas_store.url, repr(sas_store), str(caught.value)):
        assert "sig=" not in text and "se=" not in text


def test_unreachable_endpoint_is_transient_and_hides_the_sas() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    store = AzureBlobStore(
        "c", connection_string=f"BlobEndpoint={endpoint};SharedAccessSignature=sv=2024&sig=SECRET", retries=0
    )

    for call in (
        lambda: store.head("k"),
        lambda: store.put("k", b"x"),
        lambda: next(store.stream("k")),
        store.ping,
        lambda: list(store.list()),
    ):
        with pytest.raises(TransientStorageError, match="cannot reach") as caught:
            call()
        assert "SECRET" not in str(caught.value)


class _NoCredential:
    """A token credential that, like DefaultAzureCredential with nothing configured, has none to give."""

    def get_token(self, *scopes: str, **kwargs: object):
        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")

    def get_token_info(self, *scopes: str, **kwargs: object):
        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")


def test_unavailable_credential_is_a_config_error_with_a_hint() -> None:
    store = AzureBlobStore(
        "c", account_url=f"https://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}", credential=_NoCredential(), retries=0
    )

    with pytest.raises(StorageConfigError, match="az login"):
        store.head("k")


def test_token_credential_over_plain_http_is_a_config_error() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_ACCOUNT_URL.*HTTPS"):
        AzureBlobStore("c", account_url=f"http://127.0.0.1:{free_port()}/acct", credential=_NoCredential())


def test_missing_or_malformed_settings_are_config_errors() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL"):
        AzureBlobStore("c")
    with pytest.raises(StorageConfigError, match="malformed") as caught:
        AzureBlobStore("c", connection_string="AccountKey=TOPSECRET")
    assert "TOPSECRET" not in str(caught.value)


def test_injected_container_client_is_used_and_left_open(azurite: Azurite, azure_container: str) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    store = AzureBlobStore("ignored", client=service.get_container_client(azure_container))

    store.put("via-injected", b"x")
    store.close()

    assert [blob.name for blob in service.get_container_client(azure_container).list_blobs()] == ["via-injected"]
    assert store.url == f"az://{azure_container}"


# -- HTTP status translation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (404, "BlobNotFound", ObjectNotFound),
        (404, "ContainerNotFound", StorageConfigError),
        (403, "AuthenticationFailed", StorageConfigError),
        (409, "BlobAlreadyExists", PreconditionFailed),
        (412, "ConditionNotMet", PreconditionFailed),
        (400, "Md5Mismatch", IntegrityError),
        (400, "InvalidHeaderValue", StorageError),
        (429, "ServerBusy", TransientStorageError),
        (500, "InternalError", TransientStorageError),
        (503, "ServerBusy", TransientStorageError),
    ],
)
def test_http_statuses_translate_to_storage_errors(status: int, code: str, error: type[StorageError]) -> None:
    with StubServer(lambda method, path: Reply(status, {"x-ms-error-code": code})) as server:
        store = stub_store(server)

        with pytest.raises(error) as on_head:
            store.head("k")
        with pytest.raises(error):
            store.put("k", b"x")
        with pytest.raises(error):
            next(store.stream("k"))

    assert type(on_head.value).__module__.startswith("app.storage")
    assert code in str(on_head.value) or status == 404


def test_list_and_ping_on_missing_container_name_it(azurite: Azurite) -> None:
    store = AzureBlobStore("no-such-container", connection_string=azurite.connection_string)

    with pytest.raises(StorageConfigError, match="az://no-such-container: container does not exist"):
        store.ping()
    with pytest.raises(StorageConfigError, match="container does not exist"):
        list(store.list("x/"))


def test_requests_honour_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    unreachable = f"127.0.0.1:{free_port()}"  # only the proxy can answer for it
    with StubServer(lambda method, path: Reply(200, {"Content-Type": "text/plain"}, b"via proxy")) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        store = AzureBlobStore(
            "c", connection_string=connection_string(f"http://{unreachable}/{AZURITE_ACCOUNT}"), retries=0
        )

        body = store.get("some/key")

    assert body == b"via proxy"
    assert proxy.requests[0] == ("GET", f"http://{unreachable}/{AZURITE_ACCOUNT}/c/some/key")


def test_debug_logs_of_a_worker_on_a_sas_url_never_show_the_signature(azurite: Azurite, azure_container: str,
                                                                       tmp_path) -> None:
    import subprocess
    import sys

    sas = generate_container_sas(
        AZURITE_ACCOUNT, azure_container, account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, create=True, add=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = [part for part in sas.split("&") if part.startswith("sig=")][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "STORAGE_", "GCS_"))}
    env.update(STORAGE_BACKEND="azure", AZURE_CONTAINER=azure_container, LOG_LEVEL="DEBUG",
               AZURE_STORAGE_CONNECTION_STRING=f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}")

    done = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "worker", "--burst"],
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr[-2000:]
    assert signature not in done.stderr and signature.split("=", 1)[1] not in done.stderr


def test_a_rejected_account_url_is_named_without_echoing_its_signature() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_ACCOUNT_URL rejected") as caught:
        AzureBlobStore("c", account_url="http//acct.blob.core.windows.net/?sv=1&sig=TOPSECRETSIG")

    assert "TOPSECRETSIG" not in str(caught.value)
