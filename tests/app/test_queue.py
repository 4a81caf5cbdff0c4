"""The bucket-backed job queue: layout, claims, leases, and how jobs finish."""

from __future__ import annotations

import re
import threading

import pytest

from app.queue import JobNotFound, LeaseLost, Queue, index_key, is_job_id
from app.storage import LocalStore, PreconditionFailed

from .conftest import FakeClock
from .images import png_bytes


def keys(store: LocalStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def test_submit_writes_input_job_document_and_marker(queue: Queue, local_store: LocalStore) -> None:
    job = queue.submit(png_bytes(), "cat.png", "image/png")

    stored = local_store.get_json(f"jobs/{job['id']}.json")
    assert keys(local_store) == [
        index_key(job["id"], job["created_at"]),
        f"jobs/{job['id']}.json",
        f"queue/{job['id']}",
        f"uploads/{job['id']}/cat.png",
    ]
    assert stored["status"] == "queued"
    assert stored["attempts"] == 0
    assert stored["input_key"] == f"uploads/{job['id']}/cat.png"
    assert stored["created_at"].endswith("Z")
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"])


def test_job_document_keys_are_relative_to_the_store(queue: Queue, local_store: LocalStore) -> None:
    job = queue.submit(png_bytes(), "cat.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None
    queue.complete(claim, png_bytes())

    stored = local_store.get_json(f"jobs/{job['id']}.json")
    for key in (stored["input_key"], stored["result_key"]):
        assert "://" not in key and not key.startswith("/"), key
        assert local_store.exists(key)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\pic.png", "pic.png"),
        ("my cat (1).png", "my_cat_1_.png"),
        ("", "upload"),
    ],
)
def test_client_file_names_become_one_safe_key_segment(queue: Queue, given: str, expected: str) -> None:
    job = queue.submit(png_bytes(), given, "image/png")

    assert job["input_key"] == f"uploads/{job['id']}/{expected}"


@pytest.mark.parametrize("value", ["", "abc", "A" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, "0" * 31 + "g"])
def test_malformed_job_ids_are_rejected(queue: Queue, value: str) -> None:
    assert not is_job_id(value)
    with pytest.raises(ValueError):
        queue.get(value)


def test_unknown_job_id_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFound):
        queue.get("0" * 32)


def test_claim_leases_the_job_and_marks_it_processing(queue: Queue, local_store: LocalStore) -> None:
    job = queue.submit(png_bytes(), "a.png", "image/png")

    claim = queue.claim("w1")

    assert claim is not None and claim.job_id == job["id"]
    assert local_store.get_json(f"leases/{job['id']}")["worker"] == "w1"
    stored = queue.get(job["id"])
    assert (stored["status"], stored["attempts"], stored["worker"]) == ("processing", 1, "w1")


def test_claim_on_an_empty_queue_returns_none(queue: Queue) -> None:
    assert queue.claim("w1") is None


def test_concurrent_claims_never_share_a_live_lease(local_store: LocalStore) -> None:
    submitter = Queue(local_store)
    job_ids = {submitter.submit(png_bytes(), f"{n}.png", "image/png")["id"] for n in range(6)}
    start = threading.Barrier(8)
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        # Each thread gets its own store object, like a separate worker process.
        queue = Queue(LocalStore(local_store.root))
        start.wait()
        while (claim := queue.claim(worker)) is not None:
            with lock:
                claimed.append((claim.job_id, worker))

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    claimed_ids = [job_id for job_id, _ in claimed]
    assert sorted(claimed_ids) == sorted(job_ids), claimed
    assert len(set(claimed_ids)) == len(claimed_ids)


def test_a_live_lease_is_not_taken_over(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=30, clock=clock)
    queue.submit(png_bytes(), "a.png", "image/png")
    assert queue.claim("w1") is not None

    clock.advance(29)
    second = queue.claim("w2")

    assert second is None


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=30, clock=clock)
    job = queue.submit(png_bytes(), "a.png", "image/png")
    first = queue.claim("w1")
    assert first is not None

    clock.advance(31)
    second = queue.claim("w2")

    assert second is not None and second.job_id == job["id"]
    assert queue.get(job["id"])["attempts"] == 2
    assert local_store.get_json(f"leases/{job['id']}")["worker"] == "w2"
    with pytest.raises(LeaseLost):
        queue.renew(first.lease)
    with pytest.raises(LeaseLost):
        queue.complete(first, png_bytes())
    assert queue.get(job["id"])["status"] == "processing"


def test_renewal_keeps_the_lease_alive(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=30, clock=clock)
    queue.submit(png_bytes(), "a.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None

    clock.advance(20)
    claim.lease = queue.renew(claim.lease)
    clock.advance(20)

    assert queue.claim("w2") is None
    assert claim.lease.expires_at == clock.now + 10


def test_complete_stores_result_and_clears_marker_and_lease(queue: Queue, local_store: LocalStore) -> None:
    job = queue.submit(png_bytes(), "a.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None

    done = queue.complete(claim, b"result-bytes")

    assert done["status"] == "done"
    assert done["result_key"] == f"results/{job['id']}.png"
    assert local_store.get(done["result_key"]) == b"result-bytes"
    assert set(done["timings"]) >= {"queued_seconds", "processing_seconds", "total_seconds"}
    assert keys(local_store, "queue/") == []
    queue.flush()
    assert keys(local_store, "leases/") == []


def test_failed_job_lands_in_failed_prefix(queue: Queue, local_store: LocalStore) -> None:
    job = queue.submit(png_bytes(), "a.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None

    queue.fail(claim, "invalid image: cannot identify")

    record = local_store.get_json(f"failed/{job['id']}.json")
    assert record["status"] == "failed" and record["error"] == "invalid image: cannot identify"
    assert queue.get(job["id"])["status"] == "failed"
    queue.flush()
    assert keys(local_store, "queue/") == [] and keys(local_store, "leases/") == []


def test_release_requeues_without_counting_the_attempt_and_frees_the_job_at_once(queue: Queue) -> None:
    job = queue.submit(png_bytes(), "a.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None

    queue.release(claim.lease)

    released = queue.get(job["id"])
    assert (released["status"], released["attempts"], released["worker"]) == ("queued", 0, None)
    other = queue.claim("w2")
    assert other is not None and other.job_id == job["id"]


def test_release_of_a_lost_lease_leaves_the_new_owner_alone(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=30, clock=clock)
    job = queue.submit(png_bytes(), "a.png", "image/png")
    first = queue.claim("w1")
    assert first is not None
    clock.advance(31)
    assert queue.claim("w2") is not None

    queue.release(first.lease)

    assert queue.get(job["id"])["worker"] == "w2"
    assert local_store.get_json(f"leases/{job['id']}")["worker"] == "w2"


def test_retry_requeues_until_max_attempts_then_fails_with_the_reason(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, clock=clock, sleep=clock.advance)
    job = queue.submit(png_bytes(), "a.png", "image/png")
    statuses = []

    for _ in range(3):
        clock.advance(1)  # the retried attempt's lease goes once it is a second old
        claim = queue.claim("w1")
        assert claim is not None
        statuses.append(queue.retry(claim, "RuntimeError: disk hiccup")["status"])

    assert statuses == ["queued", "queued", "failed"]
    final = queue.get(job["id"])
    assert final["attempts"] == 3
    assert "RuntimeError: disk hiccup" in final["error"] and "gave up after 3 attempts" in final["error"]
    assert local_store.exists(f"failed/{job['id']}.json")
    assert queue.claim("w1") is None


def test_a_job_whose_workers_keep_dying_fails_instead_of_looping(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=10, max_attempts=2, clock=clock)
    job = queue.submit(png_bytes(), "a.png", "image/png")
    for worker in ("w1", "w2"):
        assert queue.claim(worker) is not None
        clock.advance(11)  # the worker vanished without a word

    assert queue.claim("w3") is None

    final = queue.get(job["id"])
    assert final["status"] == "failed"
    assert "gave up after 2 attempts" in final["error"] and "worker was lost" in final["error"]


def test_claim_cleans_up_the_marker_of_an_already_finished_job(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, lease_seconds=60, clock=clock, sleep=clock.advance)
    job = queue.submit(png_bytes(), "a.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None
    queue.complete(claim, b"png")
    local_store.put(f"queue/{job['id']}", b"")  # as if the worker died before deleting it and its lease
    clock.advance(61)

    rescuer = Queue(local_store, lease_seconds=60, clock=clock, sleep=clock.advance)
    assert rescuer.claim("w2") is None
    rescuer.flush()

    assert keys(local_store, "queue/") == [] and keys(local_store, "leases/") == []
    assert queue.get(job["id"])["status"] == "done"


def test_claim_removes_a_marker_without_job_document(queue: Queue, local_store: LocalStore) -> None:
    local_store.put("queue/" + "a" * 32, b"")

    assert queue.claim("w1") is None

    assert keys(local_store, "queue/") == [] and keys(local_store, "leases/") == []


def test_state_prefixes_show_the_queue_in_a_listing(queue: Queue, local_store: LocalStore) -> None:
    queued = queue.submit(png_bytes(), "queued.png", "image/png")["id"]
    done = queue.submit(png_bytes(), "done.png", "image/png")["id"]
    failed = queue.submit(png_bytes(), "failed.png", "image/png")["id"]
    processing = queue.submit(png_bytes(), "processing.png", "image/png")["id"]
    claims = {}
    while (claim := queue.claim("w1")) is not None:
        claims[claim.job_id] = claim
    queue.complete(claims[done], b"png")
    queue.fail(claims[failed], "bad")
    queue.release(claims[queued].lease)

    listing = set(keys(local_store))

    assert {f"queue/{queued}", f"queue/{processing}"} <= listing
    assert f"leases/{processing}" in listing and f"leases/{queued}" not in listing
    assert f"results/{done}.png" in listing and f"failed/{failed}.json" in listing
    assert queue.counts() == {"queued": 1, "processing": 1}


def test_recent_lists_newest_first_and_is_bounded(local_store: LocalStore, clock: FakeClock) -> None:
    queue = Queue(local_store, clock=clock)
    ids = []
    for n in range(5):
        ids.append(queue.submit(png_bytes(), f"{n}.png", "image/png")["id"])
        clock.advance(1)

    recent = queue.recent(limit=3)

    assert [job["id"] for job in recent] == ids[::-1][:3]
    assert len(queue.recent(limit=1000)) == 5


@pytest.mark.parametrize(
    "document",
    [[1, 2], {"status": "queued"}, "just text"],
    ids=["a-list", "missing-fields", "a-string"],
)
def test_a_malformed_job_document_ends_failed_and_the_next_job_is_claimed(
    queue: Queue, local_store: LocalStore, document
) -> None:
    bad = queue.submit(png_bytes(), "bad.png", "image/png")
    good = queue.submit(png_bytes(), "good.png", "image/png")
    local_store.put_json(f"jobs/{bad['id']}.json", document)

    claimed = []
    while (claim := queue.claim("w1")) is not None:
        claimed.append(claim.job_id)

    assert claimed == [good["id"]]
    queue.flush()
    failed = local_store.get_json(f"jobs/{bad['id']}.json")
    assert failed["status"] == "failed" and failed["error"].startswith("job document unreadable")
    assert local_store.exists(f"failed/{bad['id']}.json")
    assert not local_store.exists(f"queue/{bad['id']}") and not local_store.exists(f"leases/{bad['id']}")


@pytest.mark.parametrize("lease", [{"expires_at": None}, [1], {"expires_at": "soon"}, "garbage"])
def test_an_unreadable_lease_does_not_block_the_job(queue: Queue, local_store: LocalStore, lease) -> None:
    job = queue.submit(png_bytes(), "cat.png", "image/png")
    local_store.put_json(f"leases/{job['id']}", lease)

    claim = queue.claim("w1")

    assert claim is not None and claim.job_id == job["id"]


class LostResponseStore(LocalStore):
    """Commits a conditional lease write, then fails it the way a retried request whose first response was lost does."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.lose_next = False

    def put(self, key, body, **kwargs):
        info = super().put(key, body, **kwargs)
        if self.lose_next and key.startswith("leases/") and (kwargs.get("if_version") or kwargs.get("if_absent")):
            self.lose_next = False
            raise PreconditionFailed(f"{key}: precondition failed (the retry saw our own write)")
        return info


def test_a_renewal_that_landed_although_its_response_was_lost_keeps_the_lease(tmp_path) -> None:
    store = LostResponseStore(tmp_path / "store")
    queue = Queue(store, lease_seconds=60)
    queue.submit(png_bytes(), "cat.png", "image/png")
    claim = queue.claim("w1")
    assert claim is not None

    store.lose_next = True
    renewed = queue.renew(claim.lease)

    assert renewed.version == store.head(f"leases/{claim.job_id}").version
    assert queue.renew(renewed).version != renewed.version, "the lease is still ours to renew"


def test_a_claim_that_landed_although_its_response_was_lost_is_ours(tmp_path) -> None:
    store = LostResponseStore(tmp_path / "store")
    queue = Queue(store, lease_seconds=60)
    job = queue.submit(png_bytes(), "cat.png", "image/png")

    store.lose_next = True
    claim = queue.claim("w1")

    assert claim is not None and claim.job_id == job["id"]
    assert queue.claim("w2") is None
