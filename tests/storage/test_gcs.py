"""GcsStore behaviour beyond the shared contract: composites, resumable uploads, error translation."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.storage import (
    IntegrityError,
    ObjectNotFound,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from app.queue import Queue
from app.settings import Settings
from app.storage.emulators import FakeGcsServer, free_port
from app.storage.gcs import GcsStore
from app.worker import Worker
from tests.app.images import png_bytes
from tests.storage.stub_http import Reply, StubServer
from tests.storage.write_rate_proxy import WriteRateProxy

pytestmark = pytest.mark.emulator

KIB = 1024


def crc32c_hex(data: bytes) -> str:
    """CRC32C as the stores report it (8 lowercase hex chars)."""
    return google_crc32c.Checksum(data).digest().hex()


def crc32c_b64(data: bytes) -> str:
    """CRC32C as the GCS JSON API writes it (base64, big-endian)."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


@pytest.fixture
def sdk_bucket(fake_gcs: FakeGcsServer, gcs_bucket: str) -> storage.Bucket:
    """The test's bucket through a plain SDK client, to set up objects the store did not write."""
    client = storage.Client(project=fake_gcs.project, credentials=AnonymousCredentials())
    return client.bucket(gcs_bucket)


@pytest.fixture
def small_chunk_store(fake_gcs: FakeGcsServer, gcs_bucket: str):
    """A GcsStore that switches to resumable uploads above 256 KiB, in 256 KiB pieces."""
    store = GcsStore(gcs_bucket, project=fake_gcs.project, single_request_max=256 * KIB, resumable_chunk=256 * KIB)
    yield store
    store.close()


@pytest.fixture
def stub_gcs(monkeypatch: pytest.MonkeyPatch):
    """Start a stub server and point google-cloud-storage at it; yields a function taking a router."""
    servers: list[StubServer] = []

    def start(router) -> GcsStore:
        server = StubServer(router).__enter__()
        servers.append(server)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        return GcsStore("stub-bucket", project="stub", retry_deadline=0)

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def test_composite_object_lists_with_crc32c_of_all_parts(gcs_store: GcsStore, sdk_bucket: storage.Bucket) -> None:
    gcs_store.put("parts/a", b"first part|")
    gcs_store.put("parts/b", b"second part")
    sdk_bucket.blob("joined").compose([sdk_bucket.blob("parts/a"), sdk_bucket.blob("parts/b")])

    listed = {info.key: info for info in gcs_store.list()}

    joined = b"first part|second part"
    assert listed["joined"].crc32c == crc32c_hex(joined)
    assert listed["joined"].size == len(joined)
    # Real GCS gives composites no MD5; fake-gcs-server computes one. Never a wrong one.
    assert listed["joined"].md5 in (None, hashlib.md5(joined).hexdigest())


def test_composite_without_md5_hash_maps_to_none(stub_gcs) -> None:
    joined = b"first part|second part"
    resource = {
        "name": "joined",
        "bucket": "stub-bucket",
        "size": str(len(joined)),
        "crc32c": crc32c_b64(joined),
        "componentCount": 2,
        "generation": "1700000000000001",
        "updated": "2024-05-01T12:00:00.123Z",
        "contentType": "application/octet-stream",
    }
    store = stub_gcs(lambda method, path: Reply.json(200, {"kind": "storage#objects", "items": [resource]}))

    (info,) = list(store.list())

    assert info.md5 is None
    assert info.crc32c == crc32c_hex(joined)
    assert info.version == "1700000000000001"
    assert info.updated is not None and info.updated.year == 2024


def test_listing_reads_nanosecond_times_and_every_field_of_the_resource(stub_gcs) -> None:
    resource = {
        "name": "a/b c", "size": "5", "md5Hash": base64.b64encode(hashlib.md5(b"hello").digest()).decode(), "crc32c": crc32c_b64(b"hello"),
        "generation": "17", "updated": "2024-05-01T12:00:00.123456789Z", "contentType": "text/plain",
        "contentEncoding": "gzip", "cacheControl": "no-cache", "metadata": {"owner": "me"},
    }
    store = stub_gcs(lambda method, path: Reply.json(200, {"kind": "storage#objects", "items": [resource]}))

    (info,) = list(store.list())

    assert (info.key, info.size, info.version) == ("a/b c", 5, "17")
    assert info.md5 == hashlib.md5(b"hello").hexdigest() and info.crc32c == crc32c_hex(b"hello")
    assert info.updated is not None and info.updated.microsecond == 123456 and info.updated.tzinfo is not None
    assert (info.content_type, info.content_encoding, info.cache_control) == ("text/plain", "gzip", "no-cache")
    assert info.metadata == {"owner": "me"}


@pytest.mark.parametrize(
    "size", [256 * KIB * 4, 256 * KIB * 4 + 5, 256 * KIB + 1], ids=["exact-pieces", "tail", "one-byte-over"]
)
def test_resumable_upload_round_trips(small_chunk_store: GcsStore, size: int) -> None:
    data = os.urandom(size)

    info = small_chunk_store.put(
        "resumable", iter([data[: size // 3], data[size // 3 :]]), metadata={"path": "resumable"}
    )

    assert small_chunk_store.get("resumable") == data
    assert info.md5 == hashlib.md5(data).hexdigest()
    assert small_chunk_store.head("resumable").metadata == {"path": "resumable"}


def test_resumable_upload_with_bad_checksum_is_never_finalized(small_chunk_store: GcsStore) -> None:
    data = os.urandom(256 * KIB * 3)
    small_chunk_store.put("kept", b"old")

    with pytest.raises(IntegrityError):
        small_chunk_store.put("kept", iter([data]), expected_crc32c="deadbeef")
    with pytest.raises(IntegrityError, match="declared size"):
        small_chunk_store.put("new", iter([data]), size=len(data) + 1)

    assert small_chunk_store.get("kept") == b"old"
    assert not small_chunk_store.exists("new")


def test_source_failure_mid_upload_surfaces_unchanged(small_chunk_store: GcsStore) -> None:
    def failing_source():
        yield os.urandom(300 * KIB)
        raise ObjectNotFound("gs://source/key: not found")

    with pytest.raises(ObjectNotFound, match="gs://source/key"):
        small_chunk_store.put("copy", failing_source())

    assert not small_chunk_store.exists("copy")


def test_injected_client_is_used_and_left_open(fake_gcs: FakeGcsServer, gcs_bucket: str) -> None:
    client = storage.Client(project=fake_gcs.project, credentials=AnonymousCredentials())
    store = GcsStore(gcs_bucket, client=client)

    store.put("via-injected", b"x")
    store.close()

    assert [blob.name for blob in client.list_blobs(gcs_bucket)] == ["via-injected"]


class _CountingCredentials(AnonymousCredentials):
    """Anonymous credentials that count the requests they were asked to sign."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def before_request(self, request, method, url, headers) -> None:
        self.requests += 1


def test_explicit_credentials_sign_every_request(fake_gcs: FakeGcsServer, gcs_bucket: str) -> None:
    credentials = _CountingCredentials()
    store = GcsStore(gcs_bucket, project=fake_gcs.project, credentials=credentials)

    store.put("signed", b"x")
    store.get("signed")
    store.close()

    assert credentials.requests == 2


def test_missing_credentials_is_a_config_error_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))

    with pytest.raises(StorageConfigError, match="gcloud auth application-default login"):
        GcsStore("some-bucket")


def test_unreachable_endpoint_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    store = GcsStore("some-bucket", project="p", retry_deadline=0)

    with pytest.raises(TransientStorageError, match="cannot reach"):
        store.head("k")
    with pytest.raises(TransientStorageError):
        next(store.stream("k"))
    with pytest.raises(TransientStorageError):
        store.put("k", b"x")
    with pytest.raises(TransientStorageError):
        store.ping()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, StorageConfigError),
        (403, StorageConfigError),
        (408, TransientStorageError),
        (412, PreconditionFailed),
        (429, TransientStorageError),
        (500, TransientStorageError),
        (503, TransientStorageError),
        (400, StorageError),
    ],
)
def test_http_statuses_translate_to_storage_errors(stub_gcs, status: int, error: type[StorageError]) -> None:
    store = stub_gcs(lambda method, path: Reply.json(status, {"error": {"code": status, "message": "canned"}}))

    with pytest.raises(error) as caught:
        store.head("k")
    with pytest.raises(error):
        next(store.stream("k"))

    assert caught.value.__cause__ is not None  # chained to the SDK error
    if status in (401, 403):
        assert "gcloud auth application-default login" in str(caught.value)


def test_missing_bucket_404_is_told_apart_from_missing_object(stub_gcs) -> None:
    def router(method: str, path: str) -> Reply:
        if path.startswith("/storage/v1/b/stub-bucket/o?"):  # the listing: the bucket is there
            return Reply.json(200, {"kind": "storage#objects"})
        return Reply.json(404, {"error": {"code": 404, "message": "Not Found"}})

    store = stub_gcs(router)

    with pytest.raises(ObjectNotFound):
        store.head("k")


def test_real_gcs_missing_bucket_message_is_a_config_error(stub_gcs) -> None:
    store = stub_gcs(
        lambda method, path: Reply.json(
            404, {"error": {"code": 404, "message": "The specified bucket does not exist."}}
        )
    )

    with pytest.raises(StorageConfigError, match="gs://stub-bucket: bucket does not exist"):
        store.head("k")


def test_version_from_another_backend_never_matches(gcs_store: GcsStore) -> None:
    gcs_store.put("k", b"x")

    with pytest.raises(PreconditionFailed):
        gcs_store.put("k", b"y", if_version='"0x8DC0FFEE"')
    with pytest.raises(PreconditionFailed):
        gcs_store.delete("k", if_version="not-a-generation")

    assert gcs_store.get("k") == b"x"


def test_downloads_honour_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    unreachable = f"127.0.0.1:{free_port()}"  # only the proxy can answer for it
    with StubServer(
        lambda method, path: Reply(200, {"Content-Type": "application/octet-stream"}, b"via proxy")
    ) as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{unreachable}")
        store = GcsStore("proxied", project="p", retry_deadline=0)

        body = b"".join(store.stream("some/key"))

    assert body == b"via proxy"
    assert proxy.requests[0][1].startswith(f"http://{unreachable}/download/storage/v1/b/proxied/o/some%2Fkey")


# -- retries: 429 (the per-object write limit) and 503, with backoff and jitter ------------------


class RetryClock:
    """Stands in for ``time`` inside api_core's retry loop: sleeps are recorded and move a fake clock."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def retry_clock(monkeypatch: pytest.MonkeyPatch) -> RetryClock:
    """Make api_core's retries instant and record the backoff they chose."""
    from google.api_core.retry import retry_base, retry_unary

    clock = RetryClock()
    monkeypatch.setattr(retry_unary, "time", clock)
    monkeypatch.setattr(retry_base, "time", clock)
    return clock


@pytest.fixture
def retrying_stub_gcs(monkeypatch: pytest.MonkeyPatch):
    """Like ``stub_gcs``, but the store retries for up to 30 (fake) seconds; yields (store, server) pairs."""
    servers: list[StubServer] = []

    def start(router) -> tuple[GcsStore, StubServer]:
        server = StubServer(router).__enter__()
        servers.append(server)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        return GcsStore("stub-bucket", project="stub", retry_deadline=30), server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def throttled(failures: int, status: int, then: Reply) -> Callable[[str, str], Reply]:
    """A router that answers ``status`` to the first ``failures`` requests, then ``then``."""
    seen = []

    def router(method: str, path: str) -> Reply:
        seen.append(path)
        if len(seen) <= failures:
            return Reply.json(status, {"error": {"code": status, "message": "rate limit for object mutation"}})
        return then

    return router


def resource(data: bytes, generation: int, **extra: object) -> dict[str, object]:
    """The JSON API object resource of ``data`` stored as ``k``."""
    return {
        "name": "k", "bucket": "stub-bucket", "size": str(len(data)), "generation": str(generation),
        "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(), "crc32c": crc32c_b64(data), **extra,
    }


def test_conditional_create_retries_429_with_jittered_exponential_backoff(retrying_stub_gcs, retry_clock) -> None:
    store, server = retrying_stub_gcs(throttled(4, 429, Reply.json(200, resource(b"lease", 7))))
    info = store.put("k", b"lease", if_absent=True)

    server_requests = [path for _, path in server.requests]
    assert info.version == "7"
    assert len(server_requests) == 5
    assert all("ifGenerationMatch=0" in path for path in server_requests), "every attempt kept the precondition"
    # Writes back off from a 1 s base, doubling; full jitter draws each wait below its cap.
    assert len(retry_clock.sleeps) == 4
    assert all(0 <= wait <= cap for wait, cap in zip(retry_clock.sleeps, (1, 2, 4, 8), strict=True))
    assert len(set(retry_clock.sleeps)) == 4, "waits are jittered, not fixed"


def test_conditional_replace_and_delete_retry_503(retrying_stub_gcs, retry_clock) -> None:
    store, server = retrying_stub_gcs(throttled(2, 503, Reply.json(200, resource(b"job v2", 9))))

    info = store.put("k", b"job v2", if_version="8")

    assert info.version == "9"
    deletes = throttled(2, 503, Reply(204))
    # Against an emulator host the store reads the generation first (fake-gcs-server ignores it on DELETE).
    store, server = retrying_stub_gcs(
        lambda method, path: deletes(method, path) if method == "DELETE" else Reply.json(200, resource(b"job v2", 9))
    )
    store.delete("k", if_version="9")
    assert [method for method, _ in server.requests if method == "DELETE"] == ["DELETE"] * 3


@pytest.mark.parametrize("call", ["head", "stream", "list"])
def test_reads_retry_429(retrying_stub_gcs, retry_clock, call: str) -> None:
    listing = {"kind": "storage#objects", "items": [resource(b"x", 1)]}
    body = {"head": Reply.json(200, resource(b"x", 1)), "list": Reply.json(200, listing),
            "stream": Reply(200, {"Content-Type": "application/octet-stream"}, b"x")}[call]
    store, server = retrying_stub_gcs(throttled(3, 429, body))

    result = {"head": lambda: store.head("k").size, "list": lambda: len(list(store.list())),
              "stream": lambda: len(b"".join(store.stream("k")))}[call]()

    assert result == 1
    assert len(retry_clock.sleeps) == 3


def test_throttling_that_outlasts_the_retry_deadline_is_a_transient_error(retrying_stub_gcs, retry_clock) -> None:
    store, server = retrying_stub_gcs(throttled(10**6, 429, Reply(200)))

    with pytest.raises(TransientStorageError, match=r"still failing after retrying for 30s: .*HTTP 429") as caught:
        store.put("k", b"x", if_absent=True)
    with pytest.raises(TransientStorageError, match="HTTP 429"):
        store.head("k")

    assert sum(retry_clock.sleeps) <= 60
    assert caught.value.__cause__ is not None


def test_a_conditional_write_that_landed_before_its_answer_was_lost_counts_as_done(
    retrying_stub_gcs, retry_clock
) -> None:
    data = b'{"worker": "w1", "expires": 1700000060}'
    answers = iter([Reply.json(503, {"error": {"code": 503, "message": "backend error"}}),
                    Reply.json(412, {"error": {"code": 412, "message": "conditionNotMet"}})])

    def router(method: str, path: str) -> Reply:
        if method == "POST":
            return next(answers)  # the first attempt stored the object, its answer was a 503
        return Reply.json(200, resource(data, 42))

    store, server = retrying_stub_gcs(router)

    info = store.put("k", data, if_absent=True)

    assert info.version == "42"
    assert [method for method, _ in server.requests] == ["POST", "POST", "GET"]


def test_a_retried_conditional_write_that_meets_another_writers_object_still_fails(
    retrying_stub_gcs, retry_clock
) -> None:
    answers = iter([Reply.json(503, {"error": {"code": 503, "message": "backend error"}}),
                    Reply.json(412, {"error": {"code": 412, "message": "conditionNotMet"}})])
    store, server = retrying_stub_gcs(
        lambda method, path: next(answers) if method == "POST" else Reply.json(200, resource(b"someone else", 5))
    )

    with pytest.raises(PreconditionFailed):
        store.put("k", b"mine", if_absent=True)


def test_a_precondition_failure_without_retries_reads_nothing_back(retrying_stub_gcs, retry_clock) -> None:
    store, server = retrying_stub_gcs(lambda method, path: Reply.json(412, {"error": {"code": 412, "message": "no"}}))

    with pytest.raises(PreconditionFailed):
        store.put("k", b"mine", if_absent=True)

    assert [method for method, _ in server.requests] == ["POST"]


@pytest.mark.slow
def test_the_job_flow_survives_the_per_object_write_rate_limit(
    fake_gcs: FakeGcsServer, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WriteRateProxy(fake_gcs.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        store = GcsStore(gcs_bucket, project=fake_gcs.project, retry_deadline=30)
        settings = Settings(WORKER_ID="rate-limited", WORKER_POLL_SECONDS=0.05, MAX_ATTEMPTS=1)
        queue = Queue.from_settings(store, settings)
        store.put("twice", b"first")
        store.put("twice", b"second")  # within a second of the first: a 429, retried
        jobs = [queue.submit(png_bytes(), f"in-{n}.png", "image/png") for n in range(3)]

        Worker(store, settings).run(until_empty=True)

        states = [queue.get(job["id"])["status"] for job in jobs]
        assert store.get("twice") == b"second"
        store.close()

    assert "twice" in proxy.rejected, "the proxy never throttled: the test proves nothing"
    assert states == ["done"] * 3
