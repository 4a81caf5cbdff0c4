"""Claims that read one page and spread workers; a flow that never writes one name twice within a second."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app.queue import CLAIM_PAGE, CLAIM_SPREAD, LEASES, QUEUE, Queue
from app.storage import LocalStore, TransientStorageError
from app.storage.base import Body, ObjectInfo, Page

from .conftest import FakeClock
from .images import png_bytes


class CountingStore(LocalStore):
    """A LocalStore that counts requests as a cloud backend would make them (a page is one request)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str]] = []
        self._in_page = False

    def _note(self, name: str, key: str) -> None:
        if not self._in_page:
            self.calls.append((name, key))

    def put(self, key: str, body: Body, **kwargs: Any) -> ObjectInfo:
        self._note("put", key)
        return super().put(key, body, **kwargs)

    def stream(self, key: str, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        self._note("get", key)
        return super().stream(key, chunk_size)

    def head(self, key: str) -> ObjectInfo:
        self._note("head", key)
        return super().head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._note("list", prefix)
        return super().list(prefix)

    def list_page(self, prefix: str, limit: int, token: str | None = None) -> Page:
        self._note("page", prefix)
        self._in_page = True
        try:
            return super().list_page(prefix, limit, token)
        finally:
            self._in_page = False

    def delete(self, key: str, **kwargs: Any) -> None:
        self._note("delete", key)
        super().delete(key, **kwargs)


class OncePerSecondStore(LocalStore):
    """Rejects a write or delete of a name changed less than a second before, as Cloud Storage answers 429."""

    def __init__(self, root: Any, clock: FakeClock) -> None:
        super().__init__(root)
        self.clock = clock
        self.changed: dict[str, float] = {}
        self.rejected: list[str] = []

    def _mutate(self, key: str) -> None:
        last = self.changed.get(key)
        if last is not None and self.clock() - last < 1.0:
            self.rejected.append(key)
            raise TransientStorageError(f"{key}: HTTP 429 rateLimitExceeded (changed {self.clock() - last:.3f}s ago)")
        self.changed[key] = self.clock()

    def put(self, key: str, body: Body, **kwargs: Any) -> ObjectInfo:
        self._mutate(key)
        return super().put(key, body, **kwargs)

    def delete(self, key: str, **kwargs: Any) -> None:
        self._mutate(key)
        super().delete(key, **kwargs)


def test_an_empty_queue_costs_one_listing_request_per_poll(tmp_path) -> None:
    store = CountingStore(tmp_path / "s")
    queue = Queue(store)

    assert queue.claim("w1") is None
    assert queue.claim("w1") is None

    assert store.calls == [("page", QUEUE), ("page", QUEUE)]


def test_a_claim_reads_one_page_of_markers_whatever_the_queue_length(tmp_path) -> None:
    store = CountingStore(tmp_path / "s")
    queue = Queue(store)
    for n in range(CLAIM_PAGE + 20):
        queue.submit(png_bytes(), f"{n}.png", "image/png")
    store.calls.clear()

    claim = queue.claim("w1")

    assert claim is not None
    assert [call for call in store.calls if call[0] in ("page", "list")] == [("page", QUEUE), ("page", LEASES)]
    # Then: read the job, create its lease. Nothing else.
    assert [name for name, _ in store.calls[2:]] == ["get", "put"]


def test_workers_spread_over_the_oldest_markers(local_store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = Queue(local_store)
    ids = [queue.submit(png_bytes(), f"{n}.png", "image/png")["id"] for n in range(CLAIM_SPREAD * 2)]
    picked = set()
    for seed in range(12):
        monkeypatch.setattr("app.queue.random", random.Random(seed))
        claim = queue.claim(f"w{seed}")
        assert claim is not None
        picked.add(claim.job_id)
        queue.release(claim.lease)

    assert len(picked) > 1
    assert picked <= set(ids[:CLAIM_SPREAD])


def test_concurrent_workers_claim_every_job_exactly_once(local_store: LocalStore) -> None:
    submitter = Queue(local_store)
    ids = {submitter.submit(png_bytes(), f"{n}.png", "image/png")["id"] for n in range(24)}
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        queue = Queue(local_store)
        while (claim := queue.claim(name)) is not None:
            with lock:
                claimed.append(claim.job_id)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(claimed) == sorted(ids)


def test_the_fake_store_rejects_a_rewrite_within_a_second(tmp_path, clock: FakeClock) -> None:
    store = OncePerSecondStore(tmp_path / "s", clock)
    store.put("a", b"1")
    with pytest.raises(TransientStorageError):
        store.put("a", b"2")
    clock.advance(1)
    store.put("a", b"3")


def test_submit_claim_retry_complete_and_fail_never_rewrite_a_name_within_a_second(tmp_path, clock: FakeClock) -> None:
    store = OncePerSecondStore(tmp_path / "s", clock)
    api = Queue(store, clock=clock, sleep=clock.advance)
    workers = [Queue(store, clock=clock, sleep=clock.advance, max_attempts=2) for _ in range(2)]
    jobs = [api.submit(png_bytes(), f"{n}.png", "image/png")["id"] for n in range(6)]
    outcomes: dict[str, str] = {}
    retried: set[str] = set()

    for _ in range(40):  # polls; each worker takes a job and ends it at once, time moves only when it must
        for n, queue in enumerate(workers):
            claim = queue.claim(f"w{n}")
            if claim is None:
                continue
            job_id = claim.job_id
            if job_id == jobs[0]:
                outcomes[job_id] = queue.fail(claim, "invalid image")["status"]
            elif job_id == jobs[1] and job_id not in retried:
                retried.add(job_id)
                queue.retry(claim, "RuntimeError: flaky")
            else:
                outcomes[job_id] = queue.complete(claim, b"png")["status"]
        if len(outcomes) == len(jobs):
            break
        clock.advance(0.25)
    for queue in workers:
        queue.flush()

    assert store.rejected == []
    assert outcomes == {jobs[0]: "failed", **{job_id: "done" for job_id in jobs[1:]}}
    assert list(store.list(QUEUE)) == [] and list(store.list(LEASES)) == []
    assert api.get(jobs[1])["attempts"] == 2
