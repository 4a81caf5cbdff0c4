"""The copy engine between LocalStores: retries, per-object failures, checksum kinds, provenance rules."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import pytest

from app.storage import LocalStore, ObjectInfo, StorageConfigError, StorageError, TransientStorageError
from migration import copier
from migration.copier import RetryPolicy, manifest_digest, provenance_of, sync

from .conftest import WrappedStore, contents, seed

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)


class FlakyTarget(WrappedStore):
    """Fails the first ``transient`` puts of every key with a retryable error; ``broken`` keys always fail."""

    def __init__(self, inner: LocalStore, *, transient: int = 0, broken: tuple[str, ...] = ()) -> None:
        super().__init__(inner)
        self.transient = transient
        self.broken = broken
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, key, body, **kwargs):
        with self._lock:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            attempt = self.attempts[key]
        if key in self.broken:
            raise StorageError(f"{key}: request rejected (HTTP 400 InvalidBlobTier)")
        if attempt <= self.transient:
            # Consume part of the body, like a connection reset mid-upload.
            next(iter(body), None)
            raise TransientStorageError(f"{key}: temporary failure (HTTP 503)")
        return self.inner.put(key, body, **kwargs)


class CompositeLikeSource(WrappedStore):
    """A source whose objects have no MD5, only CRC32C (like GCS composite objects)."""

    def _strip(self, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, md5=None)

    def head(self, key):
        return self._strip(self.inner.head(key))

    def list(self, prefix=""):
        return (self._strip(i) for i in self.inner.list(prefix))


@pytest.fixture
def local_pair(tmp_path) -> tuple[LocalStore, LocalStore]:
    return LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")


def test_transient_errors_are_retried_until_the_copy_lands(local_pair):
    source, target = local_pair
    seed(source, {f"k{i}": bytes([i]) * 100 for i in range(5)})
    flaky = FlakyTarget(target, transient=2)

    report = sync(source, flaky, retry=FAST_RETRY)

    assert report.objects_copied == 5 and report.verified
    assert set(flaky.attempts.values()) == {3}
    assert contents(target) == contents(source)


def test_retries_give_up_after_the_policy_and_report_the_object(local_pair):
    source, target = local_pair
    seed(source, {"k": b"v"})

    report = sync(source, FlakyTarget(target, transient=99), retry=FAST_RETRY)

    assert report.objects_failed == 1 and not report.verified
    assert report.failures[0].key == "k" and "gave up after retries" in report.failures[0].reason


def test_a_permanent_error_for_one_object_does_not_stop_the_others(local_pair):
    source, target = local_pair
    seed(source, {f"ok/{i}": b"x" * i for i in range(10)})
    seed(source, {"bad/object": b"b"})

    report = sync(source, FlakyTarget(target, broken=("bad/object",)), retry=FAST_RETRY, workers=4)

    assert report.objects_copied == 10 and report.objects_failed == 1
    assert [(p.key, p.reason) for p in report.failures] == [
        ("bad/object", "bad/object: request rejected (HTTP 400 InvalidBlobTier)")]
    assert report.verified is False and report.ok is False
    assert "bad/object" not in contents(target)


def test_source_without_md5_is_compared_by_crc32c(local_pair):
    source, target = local_pair
    seed(source, {"composite": b"a" * 500, "other": b"o"})
    composite = CompositeLikeSource(source)

    first = sync(composite, target)
    source.put("composite", b"b" * 500)
    second = sync(composite, target)

    assert first.objects_copied == 2
    prov = provenance_of(target.head("composite"))
    assert prov.md5 == "" and prov.crc32c == source.head("composite").crc32c
    assert second.objects_copied == 1 and second.reasons == {"content differs": 1}
    assert target.get("composite") == b"b" * 500
    assert manifest_digest(composite) == manifest_digest(target)


def test_source_rewritten_after_planning_is_copied_in_its_new_state(local_pair):
    source, target = local_pair
    seed(source, {"moving": b"1" * 64, "still": b"s"})

    class RewrittenOnFirstRead(WrappedStore):
        """The source changes after it was listed, just before the first copy reads it."""

        rewritten = False

        def stream(self, key, chunk_size=copier.STREAM_CHUNK):
            if key == "moving" and not self.rewritten:
                self.rewritten = True
                self.inner.put("moving", b"2" * 64)
            return self.inner.stream(key, chunk_size)

    report = sync(RewrittenOnFirstRead(source), target, retry=FAST_RETRY)

    assert report.objects_copied == 2 and report.verified
    assert target.get("moving") == b"2" * 64
    assert sync(source, target).objects_copied == 0


def test_target_without_provenance_is_not_trusted_even_with_equal_bytes(local_pair):
    source, target = local_pair
    seed(source, {"a": b"same"})
    seed(target, {"a": b"same"})

    report = sync(source, target)

    assert report.objects_copied == 1
    assert report.reasons == {"target has no spotshift provenance": 1}
    assert provenance_of(target.head("a")).md5 == source.head("a").md5


def test_spotshift_metadata_of_the_source_is_not_carried_over(local_pair):
    source, target = local_pair
    source.put("a", b"x", metadata={"spotshift_source": "gs://old/a", "origin": "o"})

    sync(source, target)

    meta = target.head("a").metadata
    assert meta["origin"] == "o" and "spotshift_source" not in meta
    assert provenance_of(target.head("a")).source == f"{source.url}/a"


def test_many_objects_with_many_workers_all_land(local_pair):
    source, target = local_pair
    objects = {f"batch/{i:04d}": hashlib.sha256(str(i).encode()).digest() * (i % 7) for i in range(300)}
    seed(source, objects)

    report = sync(source, target, workers=64, max_inflight_bytes=64)

    assert report.objects_copied == 300 and report.verified
    assert contents(target, "batch/") == {k[len("batch/"):]: v for k, v in objects.items()}


class CountingStore(WrappedStore):
    """Counts listings; the first ``fail_first`` of them raise ``error``."""

    def __init__(self, inner: LocalStore, *, fail_first: int = 0, error: Exception | None = None) -> None:
        super().__init__(inner)
        self.listings = 0
        self.fail_first = fail_first
        self.error = error

    def list(self, prefix=""):
        self.listings += 1
        if self.listings <= self.fail_first:
            raise self.error
        return self.inner.list(prefix)


def test_an_early_listing_of_the_target_is_used_instead_of_listing_again(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1", "b": b"2"})
    sync(source, target)
    counted = CountingStore(target)

    report = sync(source, counted, early=copier.EarlyListing(counted))

    assert counted.listings == 1
    assert report.objects_skipped == 2 and report.objects_copied == 0 and report.verified


def test_an_early_listing_for_another_prefix_or_store_is_ignored(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1"})
    counted = CountingStore(target)
    early = copier.EarlyListing(counted, "elsewhere/")

    report = sync(source, counted, early=early)

    assert counted.listings == 2, "the early listing (other prefix) and the plan's own"
    assert report.objects_copied == 1 and contents(target) == {"a": b"1"}


def test_a_transient_failure_of_the_early_listing_falls_back_to_a_fresh_listing(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1"})
    counted = CountingStore(target, fail_first=1, error=TransientStorageError("HTTP 503"))

    report = sync(source, counted, early=copier.EarlyListing(counted), retry=FAST_RETRY)

    assert counted.listings == 2
    assert report.objects_copied == 1 and report.verified


def test_a_configuration_error_of_the_early_listing_stops_the_run(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1"})
    counted = CountingStore(target, fail_first=1, error=StorageConfigError("container does not exist"))

    with pytest.raises(StorageConfigError, match="container does not exist"):
        sync(source, counted, early=copier.EarlyListing(counted))

    assert contents(target) == {}


class BlockingListStore(WrappedStore):
    """A listing that does not finish until the test lets it."""

    def __init__(self, inner: LocalStore) -> None:
        super().__init__(inner)
        self.release = threading.Event()

    def list(self, prefix=""):
        self.release.wait(60)
        return self.inner.list(prefix)


class InterruptedListStore(WrappedStore):
    """Ctrl-C arrives while this store is being listed."""

    def list(self, prefix=""):
        raise KeyboardInterrupt


def test_ctrl_c_during_listing_does_not_wait_for_the_other_side(local_pair):
    source, target = local_pair
    slow_source = BlockingListStore(source)

    try:
        with pytest.raises(KeyboardInterrupt):
            sync(slow_source, InterruptedListStore(target))
        assert not slow_source.release.is_set(), "the interrupt came back while the source was still listing"
    finally:
        slow_source.release.set()


class UndeletableTarget(WrappedStore):
    """Refuses every delete with a permanent error."""

    def delete(self, key, **kwargs):
        raise StorageError(f"{key}: request rejected (HTTP 409 LeaseIdMissing)")


def test_a_failed_delete_is_counted_and_fails_the_run(local_pair):
    source, target = local_pair
    seed(source, {"keep": b"1"})
    seed(target, {"stale": b"2"})

    report = sync(source, UndeletableTarget(target), delete=True, retry=FAST_RETRY)

    assert report.objects_copied == 1 and report.objects_deleted == 0
    assert report.objects_delete_failed == 1 and report.to_dict()["objects_delete_failed"] == 1
    assert [p.key for p in report.failures] == ["stale"] and "delete failed" in report.failures[0].reason
    assert not report.ok


def test_provenance_round_trips_awkward_versions_and_keys(local_pair):
    source, _ = local_pair
    info = ObjectInfo(key="a&b=c/caf\u00e9 50%.txt", size=1, md5="ABCDEF", crc32c="0A0B0C0D",
                      version='"0x8DB&v=2"')

    written = ObjectInfo(key="copy", size=1, metadata=copier.provenance_for(source, info))
    (name, value), = written.metadata.items()
    prov = provenance_of(written)

    assert name == "spotshift_provenance" and value.isascii() and value.isprintable()
    assert prov.version == '"0x8db&v=2"' and prov.md5 == "abcdef" and prov.crc32c == "0a0b0c0d"
    assert prov.source == f"{source.url}/a%26b%3Dc/caf%C3%A9%2050%25.txt"


def test_provenance_is_read_in_either_form_whatever_the_case_of_its_names():
    packed = ObjectInfo(key="k", size=1, metadata={"Spotshift_Provenance": "md5=AA&source=gs://b/k"})
    legacy = ObjectInfo(key="k", size=1, metadata={"SPOTSHIFT_SOURCE": "gs://b/a&b=c", "spotshift_source_md5": "AA",
                                                   "spotshift_source_version": "7"})
    no_checksum = ObjectInfo(key="k", size=1, metadata={"spotshift_provenance": "source=gs://b/k"})

    assert provenance_of(packed) == copier.Provenance("gs://b/k", "", "aa", "")
    assert provenance_of(legacy) == copier.Provenance("gs://b/a%26b%3Dc", "7", "aa", "")
    assert provenance_of(no_checksum) is None
    assert provenance_of(ObjectInfo(key="k", size=1, metadata={"origin": "o"})) is None


def test_provenance_fields_are_read_in_any_order_with_unknown_fields_ignored_and_the_last_repeat_winning():
    entry = "source=gs://b/k&extra=1&crc32c=0A0B0C0D&junk&version=v%262&md5=aa&md5=BB"
    info = ObjectInfo(key="k", size=1, metadata={"spotshift_provenance": entry})

    assert provenance_of(info) == copier.Provenance("gs://b/k", "v&2", "bb", "0a0b0c0d")
