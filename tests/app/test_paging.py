"""Job listings at any history size: newest first from one listing page, cursor paging, the index backfill."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.queue import INDEX, JOBS, LEASES, InvalidCursor, Queue, index_key, is_job_id, new_job_id
from app.storage import LocalStore
from app.storage.base import ObjectInfo, Page

from .conftest import CLI, FakeClock, subprocess_env
from .images import png_bytes


class SpyStore(LocalStore):
    """A LocalStore that records every listing it is asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listings: list[tuple[str, str]] = []

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listings.append(("list", prefix))
        return super().list(prefix)

    def list_page(self, prefix: str, limit: int, token: str | None = None) -> Page:
        self.listings.append(("page", prefix))
        recorded = len(self.listings)
        # A list_page built on list() walks it: record only the page request itself.
        page = super().list_page(prefix, limit, token)
        del self.listings[recorded:]
        return page


@pytest.fixture
def spy(tmp_path) -> SpyStore:
    return SpyStore(tmp_path / "spy")


def submit_many(queue: Queue, clock: FakeClock, count: int) -> list[str]:
    ids = []
    for n in range(count):
        ids.append(queue.submit(png_bytes(), f"{n}.png", "image/png")["id"])
        clock.advance(1)
    return ids


def old_job(store: LocalStore, created_at: str) -> str:
    """A job document as the queue wrote it before the index: uuid4 id, no index entry."""
    job_id = uuid.uuid4().hex
    doc = {
        "id": job_id, "status": "done", "filename": "old.png", "content_type": "image/png", "size": 3,
        "input_key": f"uploads/{job_id}/old.png", "result_key": f"results/{job_id}.png", "created_at": created_at,
        "updated_at": created_at, "started_at": created_at, "finished_at": created_at, "attempts": 1,
        "worker": "w", "error": None, "timings": {},
    }
    store.put_json(f"{JOBS}{job_id}.json", doc, metadata={"status": "done", "created_at": created_at})
    return job_id


def test_new_job_ids_sort_by_creation_and_stay_valid_ids() -> None:
    ids = [new_job_id() for _ in range(50)]

    assert ids == sorted(ids)
    assert all(is_job_id(job_id) for job_id in ids)
    assert is_job_id(uuid.uuid4().hex)  # ids of older buckets stay valid


def test_index_keys_sort_newest_first() -> None:
    keys = [index_key(new_job_id(), f"2026-01-0{day}T00:00:00.000Z") for day in range(1, 10)]

    assert sorted(keys) == keys[::-1]


def test_cursor_pages_walk_every_job_once_newest_first(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, clock=clock)
    ids = submit_many(queue, clock, 7)

    seen, cursor, pages = [], None, 0
    while True:
        page = queue.page(limit=3, cursor=cursor)
        seen += [job["id"] for job in page.jobs]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor

    assert seen == ids[::-1]
    assert pages == 3


def test_a_page_is_one_listing_page_of_the_index_and_one_of_leases_whatever_the_history(spy: SpyStore, clock: FakeClock) -> None:
    queue = Queue(spy, clock=clock)
    submit_many(queue, clock, 30)
    spy.listings.clear()

    first = queue.page(limit=5)
    queue.page(limit=5, cursor=first.cursor)

    # leases/ shows which queued jobs are processing now: it holds one entry per busy worker.
    assert spy.listings == [("page", INDEX), ("page", LEASES)] * 2


@pytest.mark.parametrize("cursor", ["", "***", "%%%", "AAAA"])
def test_a_cursor_the_queue_did_not_hand_out_is_refused(queue: Queue, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        queue.page(cursor=cursor)


def test_api_job_list_pages_with_next_cursor(client, queue: Queue) -> None:
    ids = [queue.submit(png_bytes(), f"{n}.png", "image/png")["id"] for n in range(5)]

    first = client.get("/jobs", params={"limit": 3}).json()
    second = client.get("/jobs", params={"limit": 3, "cursor": first["next_cursor"]}).json()

    assert [job["id"] for job in first["jobs"] + second["jobs"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_api_refuses_a_bad_cursor_with_422(client) -> None:
    assert client.get("/jobs", params={"cursor": "***"}).status_code == 422
    assert client.get("/", params={"cursor": "***"}).status_code == 422


def test_upload_page_links_to_older_jobs(client, queue: Queue) -> None:
    for n in range(21):
        queue.submit(png_bytes(), f"{n}.png", "image/png")

    page = client.get("/")
    cursor = page.text.split('href="/?cursor=')[1].split('"')[0]
    older = client.get("/", params={"cursor": cursor})

    assert page.status_code == older.status_code == 200
    assert "0.png" in older.text and "Older jobs" not in older.text


def test_metrics_and_page_never_list_job_documents(spy: SpyStore, client_for, clock: FakeClock) -> None:
    queue = Queue(spy, clock=clock)
    submit_many(queue, clock, 5)
    client = client_for(store=spy)
    spy.listings.clear()

    metrics = client.get("/metrics")
    client.get("/")
    client.get("/jobs")

    assert metrics.status_code == 200
    assert 'spotshift_jobs{status="queued"} 5.0' in metrics.text
    assert all(kind == "page" and prefix != JOBS for kind, prefix in spy.listings), spy.listings


def test_backfill_gives_old_jobs_index_entries_in_age_order(local_store: LocalStore, clock: FakeClock) -> None:
    older = old_job(local_store, "2023-11-14T22:00:00.000Z")
    queue = Queue(local_store, clock=clock)  # the clock starts at 2023-11-14T22:13:20Z
    new = queue.submit(png_bytes(), "new.png", "image/png")["id"]
    oldest = old_job(local_store, "2023-11-14T21:00:00.000Z")
    assert [job["id"] for job in queue.recent(10)] == [new]

    assert queue.backfill_index() == (2, 1)

    assert [job["id"] for job in queue.recent(10)] == [new, older, oldest]
    assert queue.get(older)["status"] == "done"
    assert queue.backfill_index() == (0, 3)


def test_backfill_skips_documents_without_a_creation_time(local_store: LocalStore) -> None:
    local_store.put_json(f"{JOBS}{uuid.uuid4().hex}.json", {"status": "done"})

    assert Queue(local_store).backfill_index() == (0, 0)


def test_backfill_command_runs_on_the_configured_store(local_store: LocalStore) -> None:
    old_job(local_store, "2023-11-14T21:00:00.000Z")
    env = subprocess_env(STORAGE_BACKEND="local", LOCAL_STORAGE_PATH=local_store.root)

    first = subprocess.run([*CLI, "backfill-index"], env=env, capture_output=True, text=True, timeout=60)
    again = subprocess.run([*CLI, "backfill-index"], env=env, capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert "1 entries added, 0 already there" in first.stdout
    assert "0 entries added, 1 already there" in again.stdout
    assert len(list(local_store.list(INDEX))) == 1


class SlowReads(LocalStore):
    """A LocalStore whose reads take a while, counting how many are in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def get_json(self, key: str) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.02)
            return super().get_json(key)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_a_page_reads_its_job_documents_side_by_side_and_keeps_their_order(tmp_path, clock: FakeClock) -> None:
    store = SlowReads(tmp_path / "slow")
    queue = Queue(store, clock=clock)
    ids = submit_many(queue, clock, 20)
    page = queue.page(20)
    assert [job["id"] for job in page.jobs] == ids[::-1]
    assert store.most_in_flight > 1
