"""The ObjectStore contract: every test runs on LocalStore, GcsStore (fake-gcs-server) and AzureBlobStore (Azurite)."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import logging
import os
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import pytest

from app.storage import (
    IntegrityError,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageConfigError,
)
from app.storage.base import validate_key
from app.storage.emulators import AZURITE_KEY
from tests.conftest import unique_name

pytestmark = pytest.mark.emulator

MIB = 1024 * 1024


def md5_hex(data: bytes) -> str:
    """MD5 as the stores report it (lowercase hex)."""
    return hashlib.md5(data).hexdigest()


def crc32c_hex(data: bytes) -> str:
    """CRC32C as the stores report it (8 lowercase hex chars)."""
    return google_crc32c.Checksum(data).digest().hex()


def chunks_of(data: bytes, size: int):
    """A one-shot iterator body, like another store's stream."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def repeated(chunk: bytes, count: int):
    """A large body produced chunk by chunk without ever existing whole."""
    for _ in range(count):
        yield chunk


@pytest.fixture
def missing_store(store: ObjectStore, request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    """A store of the same backend pointing at a bucket/container/directory that does not exist."""
    name = unique_name("missing")
    if isinstance(store, LocalStore):
        return LocalStore(tmp_path / name, create=False)
    if store.scheme == "gs":
        from app.storage.gcs import GcsStore

        fake_gcs = request.getfixturevalue("fake_gcs")
        return GcsStore(name, project=fake_gcs.project, retry_deadline=0)
    from app.storage.azure import AzureBlobStore

    azurite = request.getfixturevalue("azurite")
    return AzureBlobStore(name, connection_string=azurite.connection_string, retries=0)


# -- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "file", "iterator"])
def test_body_round_trips_whatever_its_form(store: ObjectStore, kind: str) -> None:
    data = os.urandom(300_000)
    body = {
        "bytes": data,
        "bytearray": bytearray(data),
        "file": io.BytesIO(data),
        "iterator": chunks_of(data, 65_536),
    }[kind]

    info = store.put(f"round/{kind}", body)

    assert store.get(f"round/{kind}") == data
    assert info.size == len(data)
    assert info.md5 == md5_hex(data)


def test_zero_byte_object_round_trips(store: ObjectStore) -> None:
    info = store.put("empty", b"")

    assert store.get("empty") == b""
    assert list(store.stream("empty")) == []
    assert info.size == 0
    assert store.head("empty").size == 0
    assert store.head("empty").md5 == md5_hex(b"")
    assert [i.key for i in store.list("empty")] == ["empty"]


AWKWARD_KEYS = [
    "plain.txt",
    "unicode/été/日本語/ключ.bin",
    "with spaces/a file name.txt",
    "hash#and%percent",
    "question?mark&amp=1",
    "plus+sign+",
    "deep/a/b/c/d/e/f/g/h/i/j/leaf",
    "tilde~and'quote\"(paren)",
    "%2F-looks-encoded%20",
]


def test_awkward_keys_round_trip(store: ObjectStore) -> None:
    for index, key in enumerate(AWKWARD_KEYS):
        store.put(key, f"body {index}".encode())

    for index, key in enumerate(AWKWARD_KEYS):
        assert store.get(key) == f"body {index}".encode(), key
        assert store.head(key).key == key
    assert sorted(info.key for info in store.list()) == sorted(AWKWARD_KEYS)
    assert [info.key for info in store.list("unicode/été/")] == ["unicode/été/日本語/ключ.bin"]


def test_overwrite_replaces_bytes_and_metadata(store: ObjectStore) -> None:
    store.put("doc", b"first", metadata={"round": "1", "old": "yes"}, content_type="text/plain")

    store.put("doc", b"second", metadata={"round": "2"}, content_type="application/json")

    info = store.head("doc")
    assert store.get("doc") == b"second"
    assert info.metadata == {"round": "2"}
    assert info.content_type == "application/json"


def test_put_returns_what_head_reports(store: ObjectStore) -> None:
    put_info = store.put("same", b"payload", content_type="text/plain", metadata={"k": "v"})

    head_info = store.head("same")

    for field in ("key", "size", "content_type", "md5", "version", "metadata", "crc32c"):
        assert getattr(put_info, field) == getattr(head_info, field), field


# -- properties, checksums, listing -------------------------------------------------


def test_content_settings_and_metadata_are_preserved(store: ObjectStore) -> None:
    data = gzip.compress(b"spotshift " * 1000)
    metadata = {"source": "gs_bucket", "job_id": "42", "empty": ""}

    store.put(
        "settings/page.html.gz",
        data,
        content_type="text/html; charset=utf-8",
        content_encoding="gzip",
        cache_control="public, max-age=60",
        metadata=metadata,
    )

    for info in (store.head("settings/page.html.gz"), next(iter(store.list("settings/")))):
        assert info.content_type == "text/html; charset=utf-8"
        assert info.content_encoding == "gzip"
        assert info.cache_control == "public, max-age=60"
        assert info.metadata == metadata
    # The stored (compressed) bytes come back as they are, never gunzipped.
    assert store.get("settings/page.html.gz") == data


def test_checksums_are_md5_and_crc32c_of_the_bytes(store: ObjectStore) -> None:
    data = os.urandom(123_457)

    put_info = store.put("sums", data)

    expected = (md5_hex(data), crc32c_hex(data))
    assert (put_info.md5, put_info.crc32c) == expected
    assert (store.head("sums").md5, store.head("sums").crc32c) == expected
    listed = next(iter(store.list("sums")))
    assert (listed.md5, listed.crc32c) == expected
    assert len(listed.crc32c) == 8


def test_list_yields_prefix_matches_in_key_order_with_metadata(store: ObjectStore) -> None:
    keys = ["dir/b", "dir/a/2", "dir/a/1", "dir/A", "dir/c.txt", "dir/a b", "dir2/x", "di", "other/dir/z"]
    for index, key in enumerate(keys):
        store.put(key, f"{index}".encode(), metadata={"index": str(index)})

    listed = list(store.list("dir/"))

    expected = sorted(k for k in keys if k.startswith("dir/"))
    assert [info.key for info in listed] == expected
    for info in listed:
        assert info.metadata == {"index": str(keys.index(info.key))}
        assert info.size == len(str(keys.index(info.key)))
        assert info.md5 == md5_hex(str(keys.index(info.key)).encode())
        assert info.version
    assert [info.key for info in store.list()] == sorted(keys)
    assert list(store.list("nothing-here/")) == []


# -- conditional writes ---------------------------------------------------------------


def test_if_absent_creates_once_then_loses(store: ObjectStore) -> None:
    store.put("lease", b"mine", if_absent=True)

    with pytest.raises(PreconditionFailed):
        store.put("lease", b"yours", if_absent=True)

    assert store.get("lease") == b"mine"


def test_if_version_wins_with_current_version_and_loses_with_stale(store: ObjectStore) -> None:
    first = store.put("cas", b"v1")
    second = store.put("cas", b"v2", if_version=first.version)

    with pytest.raises(PreconditionFailed):
        store.put("cas", b"v3", if_version=first.version)

    assert second.version != first.version
    assert store.get("cas") == b"v2"
    assert store.head("cas").version == second.version


def test_if_version_on_missing_key_fails(store: ObjectStore) -> None:
    version = store.put("was-here", b"x").version
    store.delete("was-here")

    with pytest.raises(PreconditionFailed):
        store.put("was-here", b"y", if_version=version)

    assert not store.exists("was-here")


def test_concurrent_if_absent_has_exactly_one_winner(store: ObjectStore) -> None:
    barrier = threading.Barrier(8)
    outcomes: dict[int, str] = {}

    def claim(worker: int) -> None:
        barrier.wait()
        try:
            store.put("claim", f"worker-{worker}".encode(), if_absent=True)
            outcomes[worker] = "won"
        except PreconditionFailed:
            outcomes[worker] = "lost"

    threads = [threading.Thread(target=claim, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [worker for worker, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 8
    assert len(winners) == 1
    assert store.get("claim") == f"worker-{winners[0]}".encode()


def test_one_store_serves_many_threads(store: ObjectStore, caplog: pytest.LogCaptureFixture) -> None:
    payloads = {f"threads/{index:03d}": os.urandom(4096) for index in range(160)}

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"), ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda item: store.put(*item), payloads.items()))
        bodies = dict(zip(payloads, pool.map(store.get, payloads), strict=True))
        infos = list(pool.map(store.head, payloads))

    assert bodies == payloads
    assert [info.md5 for info in infos] == [md5_hex(body) for body in payloads.values()]
    assert len(list(store.list("threads/"))) == len(payloads)
    # A pool smaller than the thread count makes urllib3 drop connections and warn.
    assert not [record for record in caplog.records if "pool is full" in record.getMessage()]


# -- integrity --------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["md5", "crc32c"])
def test_checksum_mismatch_on_small_body_commits_nothing(store: ObjectStore, wrong: str) -> None:
    store.put("keep", b"original")
    data = b"replacement bytes"
    kwargs = {"expected_md5": "0" * 32} if wrong == "md5" else {"expected_crc32c": "00000000"}

    with pytest.raises(IntegrityError):
        store.put("keep", data, **kwargs)
    with pytest.raises(IntegrityError):
        store.put("fresh", data, **kwargs)

    assert store.get("keep") == b"original"
    assert not store.exists("fresh")


@pytest.mark.parametrize("sized", [True, False], ids=["size-hint", "no-size"])
def test_checksum_mismatch_on_large_streamed_body_commits_nothing(store: ObjectStore, sized: bool) -> None:
    data = os.urandom(12 * MIB)
    store.put("keep-big", b"original")
    size = len(data) if sized else None

    with pytest.raises(IntegrityError):
        store.put("keep-big", chunks_of(data, MIB), expected_md5=md5_hex(b"other"), size=size)
    with pytest.raises(IntegrityError):
        store.put("fresh-big", chunks_of(data, MIB), expected_crc32c=crc32c_hex(b"other"), size=size)

    assert store.get("keep-big") == b"original"
    assert not store.exists("fresh-big")
    assert [info.key for info in store.list("fresh")] == []


def test_matching_checksums_on_large_streamed_body_commit(store: ObjectStore) -> None:
    data = os.urandom(10 * MIB + 17)

    info = store.put(
        "big-ok", chunks_of(data, MIB), expected_md5=md5_hex(data), expected_crc32c=crc32c_hex(data), size=len(data)
    )

    assert store.get("big-ok") == data
    assert (info.md5, info.crc32c) == (md5_hex(data), crc32c_hex(data))
    assert (store.head("big-ok").md5, store.head("big-ok").crc32c) == (md5_hex(data), crc32c_hex(data))


def test_expected_checksums_accept_uppercase_hex(store: ObjectStore) -> None:
    data = b"case does not matter"

    store.put("upper", data, expected_md5=md5_hex(data).upper(), expected_crc32c=crc32c_hex(data).upper())

    assert store.get("upper") == data


# -- streaming ------------------------------------------------------------------------------


def test_stream_of_large_object_yields_several_chunks(store: ObjectStore) -> None:
    data = os.urandom(20 * MIB)
    store.put("large", data)

    chunks = list(store.stream("large"))

    assert len(chunks) >= 3
    assert max(len(chunk) for chunk in chunks) <= 4 * MIB
    assert b"".join(chunks) == data


@pytest.mark.parametrize("sized", [True, False], ids=["size-hint", "no-size"])
def test_large_bodies_move_with_bounded_memory(store: ObjectStore, sized: bool) -> None:
    piece = os.urandom(MIB)
    count = 40  # 40 MiB that never exists whole in this process
    digest = hashlib.md5()
    tracemalloc.start()
    try:
        store.put("bounded", repeated(piece, count), size=count * MIB if sized else None)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        for chunk in store.stream("bounded"):
            digest.update(chunk)
            total += len(chunk)
        _, stream_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == count * MIB
    assert digest.hexdigest() == md5_hex(piece * count)
    assert put_peak < 20 * MIB, f"put held {put_peak / MIB:.1f} MiB"
    assert stream_peak < 12 * MIB, f"stream held {stream_peak / MIB:.1f} MiB"


# -- missing things -------------------------------------------------------------------------


def test_missing_key_is_object_not_found(store: ObjectStore) -> None:
    store.put("present", b"x")

    with pytest.raises(ObjectNotFound):
        store.head("absent")
    with pytest.raises(FileNotFoundError):
        store.get("absent")
    with pytest.raises(ObjectNotFound):
        store.delete("absent", missing_ok=False)
    chunks = store.stream("absent")  # lazy: nothing happens until the first next()
    with pytest.raises(ObjectNotFound):
        next(chunks)

    assert store.exists("present")
    assert not store.exists("absent")
    store.delete("absent")  # missing_ok defaults to True


def test_delete_honours_version(store: ObjectStore) -> None:
    old = store.put("victim", b"v1")
    new = store.put("victim", b"v2")

    with pytest.raises(PreconditionFailed):
        store.delete("victim", if_version=old.version)
    assert store.get("victim") == b"v2"

    store.delete("victim", if_version=new.version)
    assert not store.exists("victim")
    with pytest.raises(PreconditionFailed):
        store.delete("victim", if_version=new.version)


def test_ping_passes_on_a_usable_store(store: ObjectStore) -> None:
    store.ping()


def test_missing_bucket_is_a_configuration_error(missing_store: ObjectStore) -> None:
    with pytest.raises(StorageConfigError, match="not|does not exist"):
        missing_store.ping()
    with pytest.raises(StorageConfigError):
        list(missing_store.list())
    with pytest.raises(StorageConfigError):
        missing_store.head("some/key")
    with pytest.raises(StorageConfigError):
        missing_store.put("some/key", b"x")
    with pytest.raises(StorageConfigError):
        next(missing_store.stream("some/key"))
    with pytest.raises(StorageConfigError):
        missing_store.delete("some/key")


def test_invalid_keys_are_rejected_before_any_call(store: ObjectStore) -> None:
    for key in ["", "/abs", "dir/", "a//b", "a/../b", "./a", "nul\x00byte"]:
        with pytest.raises(ValueError):
            store.put(key, b"x")
        with pytest.raises(ValueError):
            store.head(key)


def test_key_validation_decides_as_splitting_into_segments_would() -> None:
    """``validate_key`` checks segments without splitting; every key of up to 6 symbols gets the split rule's answer."""

    def by_segments(key: str) -> bool:
        if not key or key.startswith("/") or key.endswith("/"):
            return False
        if any(part in ("", ".", "..") for part in key.split("/")):
            return False
        try:
            return "\x00" not in key and len(key.encode()) <= 1024
        except UnicodeEncodeError:  # a lone surrogate: no backend can store it
            return False

    def accepted(key: str) -> bool:
        try:
            return validate_key(key) == key
        except ValueError:
            return False

    symbols = ["/", ".", "..", "a", "-", "é", "\x00"]
    keys = ["".join(parts) for size in range(7) for parts in itertools.product(symbols, repeat=size)]
    keys += ["a" * 1024, "a" * 1025, "é" * 512, "é" * 513, "x/" + "a" * 1022, "\ud800"]
    wrong = [key for key in keys if accepted(key) != by_segments(key)]
    assert not wrong, wrong[:10]
    assert sum(map(accepted, keys)) > 1000  # the alphabet reaches both answers


# -- no secrets ---------------------------------------------------------------------------------


def test_url_repr_and_errors_hold_no_secret(store: ObjectStore) -> None:
    store.put("visible", b"x")
    messages = [store.url, repr(store), str(store)]
    for call in (lambda: store.head("absent/key"), lambda: store.put("visible", b"y", if_absent=True)):
        try:
            call()
        except Exception as err:  # noqa: BLE001 - collecting messages
            messages.append(str(err))

    assert store.url.startswith(f"{store.scheme}://")
    assert store.url in repr(store)
    assert "absent/key" in messages[3]
    for text in messages:
        assert AZURITE_KEY not in text
        assert "AccountKey" not in text
        assert "sig=" not in text
        assert "SharedAccessSignature" not in text


def test_json_helpers_round_trip(store: ObjectStore) -> None:
    info = store.put_json("jobs/1.json", {"state": "queued", "n": 1})

    assert store.get_json("jobs/1.json") == {"n": 1, "state": "queued"}
    assert info.content_type == "application/json"
