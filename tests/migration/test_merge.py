"""The streaming planner: two sorted listings merged in one pass, deletes and verification by the same merge."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from app.storage import LocalStore
from migration import copier
from migration.copier import sync, verify
from migration import merge as merge_module
from migration.merge import Counter, EarlyListing, Selection, merge, read_ahead
from migration.rules import Shard, UsageError

from .conftest import WrappedStore, contents, seed

#: Keys whose order differs between code point (UTF-8 byte) order and UTF-16 code unit order,
#: plus the ASCII neighbours of '/' that break naive directory walks.
ORDER_KEYS = ["a-b", "a.b", "a/b", "a0", "A", "\u00e9", "e\u0301", "\uff01", "\ufb01", "\ue000",
              "\U0001F600", "\U0001F601/x", "z"]


class Utf16OrderStore(WrappedStore):
    """A LocalStore whose listing is in UTF-16 code unit order, as Azurite lists (see test_listing_order)."""

    def __init__(self, inner: LocalStore) -> None:
        super().__init__(inner)
        self.heads = 0

    def head(self, key):
        self.heads += 1
        return self.inner.head(key)

    def list(self, prefix=""):
        return iter(sorted(self.inner.list(prefix), key=lambda info: info.key.encode("utf-16-be")))


@pytest.fixture
def local_pair(tmp_path) -> tuple[LocalStore, LocalStore]:
    return LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")


def _pairs(source, target, **selection):
    return [(p.key, p.source is not None, p.target is not None) for p in
            merge(source, target, Selection.of(**selection))]


def test_merge_pairs_every_key_once_in_key_order(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1", "b/x": b"2", "c": b"3"})
    seed(target, {"b/x": b"2", "bb": b"4", "d": b"5"})

    pairs = _pairs(source, target)

    assert pairs == [("a", True, False), ("b/x", True, True), ("bb", False, True), ("c", True, False),
                     ("d", False, True)]


def test_local_listing_is_in_key_order_for_keys_around_the_separator(local_store):
    keys = ["a/b-c", "a0", "a/b/c", "A", "a.b", "ab", "a/B", "a-b", "a/b.d", "\u00e9/x", "e\u0301"]
    seed(local_store, {k: b"x" for k in keys})

    listed = [info.key for info in local_store.list()]

    assert listed == sorted(keys)


def test_local_listing_walks_only_the_prefix(local_store, monkeypatch):
    seed(local_store, {"keep/a": b"1", "keep/b/c": b"2", "keeper": b"3", "other/x": b"4"})
    walked: list[str] = []
    real = local_store._walk

    def spy(directory, key_prefix, start, after):
        walked.append(key_prefix + start)
        return real(directory, key_prefix, start, after)

    monkeypatch.setattr(local_store, "_walk", spy)

    assert [i.key for i in local_store.list("keep/")] == ["keep/a", "keep/b/c"]
    assert [i.key for i in local_store.list("kee")] == ["keep/a", "keep/b/c", "keeper"]
    assert not any(w.startswith("other") for w in walked), walked


def test_sync_copies_missing_and_changed_and_skips_unchanged(local_pair):
    source, target = local_pair
    seed(source, {f"k{i:03d}": bytes([i]) * 10 for i in range(50)})
    sync(source, target)
    source.put("k007", b"changed!!!")
    source.put("new", b"n")

    report = sync(source, target)

    assert (report.objects_copied, report.objects_skipped, report.verified) == (2, 49, True)
    assert report.reasons == {"content differs": 1, "missing on target": 1}
    assert contents(target) == contents(source)


def test_delete_removes_only_what_the_source_lacks(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1", "c": b"3"})
    sync(source, target)
    seed(target, {"b": b"extra", "d/e": b"extra"})

    report = sync(source, target, delete=True)

    assert (report.objects_deleted, report.objects_copied) == (2, 0)
    assert contents(target) == contents(source)


def test_delete_limit_is_checked_before_anything_is_written(local_pair):
    source, target = local_pair
    seed(source, {"new": b"1"})
    seed(target, {f"old{i}": b"x" for i in range(5)})

    with pytest.raises(copier.DeleteLimitExceeded, match="refusing to delete 5"):
        sync(source, target, delete=True, max_delete=4)

    assert set(contents(target)) == {f"old{i}" for i in range(5)}


def test_verify_uses_the_same_merge_and_counts_missing_extra_and_altered(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1", "b": b"2", "c": b"3"})
    sync(source, target)
    target.delete("b")
    target.put("zzz", b"extra")
    source.put("c", b"33")

    report = verify(source, target)

    assert (report.objects_checked, report.objects_matched, report.objects_missing, report.objects_extra) == (3, 1, 1, 1)
    assert [p.key for p in report.mismatches] == ["b", "c"]


@pytest.mark.parametrize("utf16_side", ["source", "target", "both"])
def test_merge_is_correct_when_a_side_lists_in_utf16_order(local_pair, utf16_side):
    source, target = local_pair
    seed(source, {k: k.encode() for k in ORDER_KEYS})
    src = Utf16OrderStore(source) if utf16_side in ("source", "both") else source
    dst = Utf16OrderStore(target) if utf16_side in ("target", "both") else target

    first = sync(src, dst, delete=True)
    second = sync(src, dst, delete=True)
    checked = verify(src, dst)

    assert first.verified and first.objects_deleted == 0
    assert second.objects_copied == 0 and second.objects_deleted == 0 and second.verified
    assert checked.verified and checked.objects_extra == 0 and checked.objects_checked == len(ORDER_KEYS)
    assert contents(target) == {k: k.encode() for k in ORDER_KEYS}


def test_out_of_order_listing_still_finds_real_extras_and_missing(local_pair):
    source, target = local_pair
    seed(source, {k: b"s" for k in ORDER_KEYS})
    sync(source, target)
    target.delete("\uff01")
    target.put("\U0001F600extra", b"x")

    report = verify(source, Utf16OrderStore(target))

    assert report.objects_extra == 1 and [p.key for p in report.mismatches] == ["\uff01"]


def test_merge_holds_no_listing(local_pair):
    source, target = local_pair
    seed(source, {f"d{i // 50}/k{i:04d}": b"x" for i in range(400)})
    counts = (Counter(), Counter())
    pairs = merge(source, target, Selection.of(), counts=counts)

    first = list(itertools.islice(pairs, 10))

    assert [p.key for p in first] == [f"d0/k{i:04d}" for i in range(10)]
    assert counts[0].objects < 100, "the merge read far ahead of what was consumed"


def test_early_listing_streams_and_is_used_once(local_pair):
    source, target = local_pair
    seed(source, {"a": b"1", "b": b"2"})
    early = EarlyListing(source)

    taken = early.take(source, "")

    assert [i.key for i in taken] == ["a", "b"]
    assert early.take(source, "") is None


def test_shard_text_is_validated():
    assert Shard.parse("3/4") == Shard(3, 4)
    assert Shard.parse(None).whole
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(UsageError):
            Shard.parse(bad)


def test_a_read_ahead_listing_keeps_the_order_and_stays_a_bounded_distance_ahead():
    produced = itertools.count()
    listed: list[int] = []

    def listing():
        for i in range(50_000):
            listed.append(next(produced))
            yield i

    stream = read_ahead(listing())
    first = [next(stream) for _ in range(10)]
    deadline = time.monotonic() + 10
    while len(listed) < merge_module.PREFETCH and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # give the thread the chance to overrun, if it could

    assert first == list(range(10))
    assert len(listed) <= 10 + merge_module.PREFETCH + 2 * merge_module.BATCH, len(listed)
    assert list(stream) == list(range(10, 50_000))


def test_a_read_ahead_listing_raises_its_error_where_it_happened_and_stops_when_abandoned():
    def failing():
        yield from range(3)
        raise copier.UsageError("listing broke")

    stream = read_ahead(failing())
    got = []
    with pytest.raises(copier.UsageError, match="listing broke"):
        for item in stream:
            got.append(item)
    assert got == [0, 1, 2]

    before = threading.active_count()
    endless = read_ahead(itertools.count())
    next(endless)
    endless.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before, "the read-ahead thread kept running after its consumer left"


def test_a_read_ahead_listing_starts_only_when_first_read_and_closes_its_source_when_abandoned():
    started = threading.Event()
    closed = threading.Event()

    def listing():
        started.set()
        try:
            yield from itertools.count()
        finally:
            closed.set()

    stream = read_ahead(listing())
    time.sleep(0.1)  # a thread started at once would have begun the listing by now
    lazy = not started.is_set()
    assert next(stream) == 0
    stream.close()

    assert lazy, "the listing ran before anything asked for it"
    assert closed.wait(5), "the abandoned listing was never closed (its connection would stay open)"
