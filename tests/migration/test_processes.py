"""Copies between two local directories in worker processes (``migration.processes``)."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys

import pytest

from app.storage import LocalStore, StorageConfigError
from migration import processes
from migration.copier import RetryPolicy, provenance_of, sync, verify

from .conftest import REPO_ROOT, contents, seed

NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0)


@pytest.fixture
def started(monkeypatch) -> list[int]:
    """Batches of 8 (so a few dozen objects use processes); records the worker count of each pool started."""
    counts: list[int] = []

    class Recording(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            counts.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(processes, "BATCH", 8)
    monkeypatch.setattr(processes.concurrent.futures, "ProcessPoolExecutor", Recording)
    return counts


@pytest.fixture
def pair(tmp_path) -> tuple[LocalStore, LocalStore]:
    return LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")


def test_a_local_copy_of_many_objects_runs_in_worker_processes_and_lands_whole(pair, started):
    source, target = pair
    objects = {f"d{i % 3}/obj-{i:03d}": os.urandom(i * 7) for i in range(60)}
    seed(source, objects, content_type="image/png", metadata={"origin": "test"})

    report = sync(source, target, workers=2)

    assert started == [2]
    assert report.objects_copied == 60 and report.bytes_copied == sum(map(len, objects.values()))
    assert report.verified and not report.failures
    assert contents(target) == objects
    copied = target.head("d1/obj-001")
    assert copied.content_type == "image/png" and copied.metadata["origin"] == "test"
    assert provenance_of(copied).md5 == source.head("d1/obj-001").md5
    again = sync(source, target, workers=2)
    assert again.objects_copied == 0 and again.objects_skipped == 60
    assert verify(source, target, deep=True).verified


def test_fewer_copies_than_one_batch_start_no_process(pair, started):
    source, target = pair
    seed(source, {f"k{i}": b"x" * i for i in range(5)})

    report = sync(source, target)

    assert started == []
    assert report.objects_copied == 5 and report.verified
    assert contents(target) == contents(source)


def test_a_corrupt_source_object_fails_alone_while_the_others_are_copied(pair, started):
    source, target = pair
    seed(source, {f"ok/{i:02d}": b"good %d" % i for i in range(30)})
    seed(source, {"bad/obj": b"original bytes"})
    with open(source.root / "bad" / "obj", "r+b") as handle:  # same size and inode: the sidecar still matches
        handle.write(b"ORIGINAL")

    report = sync(source, target, retry=NO_WAIT, workers=2)

    assert started == [2]
    assert report.objects_copied == 30 and report.objects_failed == 1 and not report.verified
    assert [p.key for p in report.failures] == ["bad/obj"]
    assert "checksum mismatch, nothing written" in report.failures[0].reason
    assert "bad/obj" not in contents(target)


def test_a_target_removed_under_the_workers_stops_the_run_with_a_configuration_error(pair, started):
    source, target = pair
    seed(source, {f"k{i:02d}": b"v" for i in range(40)})
    infos = list(source.list())
    shutil.rmtree(target.root)

    with pytest.raises(StorageConfigError, match="does not exist"):
        with processes.ProcessPool(source, target, target_prefix="", processes=2, retry=NO_WAIT,
                                   record=lambda outcome, nbytes: None) as pool:
            for info in infos:
                pool.submit((info.key, info))

    assert started == [2]
    assert not target.root.exists()  # no worker made the removed directory again


def test_ctrl_c_in_the_planner_lets_running_batches_finish_and_leaves_no_half_written_object(pair, started):
    source, target = pair
    objects = {f"k{i:03d}": os.urandom(100 + i) for i in range(64)}
    seed(source, objects)
    recorded = []

    with pytest.raises(KeyboardInterrupt):
        with processes.ProcessPool(source, target, target_prefix="", processes=2, retry=NO_WAIT,
                                   record=lambda outcome, nbytes: recorded.append(outcome)) as pool:
            for n, info in enumerate(source.list()):
                if n == 40:
                    raise KeyboardInterrupt
                pool.submit((info.key, info))

    landed = contents(target)
    assert landed and set(landed) <= {o.key for o in recorded}  # whatever landed was recorded ...
    assert all(landed[key] == objects[key] for key in landed)  # ... and whole
    assert not os.listdir(target.root / ".spotshift" / "tmp")
    resumed = sync(source, target)
    assert resumed.objects_copied == 64 - len(landed) and resumed.verified
    assert contents(target) == objects


def test_a_batched_target_is_synced_once_at_the_end_for_the_workers_writes(pair, started, monkeypatch):
    source, target = pair
    seed(source, {f"k{i:02d}": b"v" * i for i in range(20)})
    syncs = []
    monkeypatch.setattr(os, "sync", lambda: syncs.append(1))

    with target.batched():
        report = sync(source, target, workers=2)
        assert syncs == []

    assert report.objects_copied == 20 and started == [2]
    assert syncs == [1]


_PLANNER = """
import sys, time
from app.storage import LocalStore
from migration import processes
processes.BATCH = 1
source, target = LocalStore(sys.argv[1]), LocalStore(sys.argv[2])
pool = processes.ProcessPool(source, target, target_prefix="", processes=2, retry=processes.RetryPolicy(),
                             record=lambda outcome, nbytes: None)
for info in source.list():
    pool.submit((info.key, info))
print("handed out", flush=True)
time.sleep(600)
"""


def test_workers_exit_when_their_planner_is_killed_even_while_they_start(pair):
    source, target = pair
    seed(source, {f"k{i}": b"v" for i in range(4)})
    planner = subprocess.Popen([sys.executable, "-c", _PLANNER, str(source.root), str(target.root)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert planner.stdout.readline() == "handed out\n"
    planner.send_signal(signal.SIGKILL)  # the workers are still importing, or just started

    # Each worker holds the planner's stdout until it exits.
    out, _ = planner.communicate(timeout=60)

    assert planner.returncode == -signal.SIGKILL and out == ""


def test_one_worker_process_per_core_this_process_may_use_and_never_more_than_asked(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})

    assert processes.process_count(32) == 3
    assert processes.process_count(2) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert processes.process_count(256) == processes.MAX_PROCESSES
