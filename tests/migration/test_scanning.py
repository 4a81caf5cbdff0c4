"""A local listing with its folders scanned ahead in worker processes (``migration.scanning``)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import pytest

from app.storage import LocalStore
from migration import scanning
from migration.copier import sync, verify
from migration.scanning import ProcessScanner, scanned_listing

from .conftest import REPO_ROOT, contents, seed

#: Neighbours of "/" in key order, nested folders, a folder named like the store's own, non-ASCII: over 16 folders.
TREE = (["a-b", "a.b", "a/x", "a/y/z", "a/y0", "a0", "b/c/d", "b/c/e", "b/cd", "bb", "deep/1/2/3/4/k", "é/1",
         "n/.spotshift/k", "z/z"] + [f"f{i:02d}/k{j}" for i in range(20) for j in range(3)])


@pytest.fixture
def pools(monkeypatch) -> list[concurrent.futures.ProcessPoolExecutor]:
    """Every worker pool a scanner starts."""
    started: list[concurrent.futures.ProcessPoolExecutor] = []

    class Recording(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, max_workers, **kwargs):
            super().__init__(max_workers, **kwargs)
            self.batches: list[int] = []
            started.append(self)

        def submit(self, fn, /, *args, **kwargs):
            self.batches.append(len(args[0]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(scanning.concurrent.futures, "ProcessPoolExecutor", Recording)
    return started


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "store")
    for key in TREE:
        store.put(key, key.encode(), metadata={"k": "v"})
    return store


def _seen(infos):
    return [(i.key, i.size, i.md5, i.metadata, i.version) for i in infos]


@pytest.mark.parametrize("prefix", ["", "a", "a/", "b/c", "f1", "n/", "none/"])
def test_a_scanned_listing_gives_exactly_what_list_gives(store, pools, prefix):
    expected = _seen(store.list(prefix))

    assert _seen(scanned_listing(store, prefix, 2)) == expected
    assert [key for key, *_ in expected] == sorted(k for k in TREE if k.startswith(prefix))
    if prefix == "":
        assert len(pools) == 1, "over 16 folders: the folders were scanned in worker processes"


def test_a_walk_asks_for_every_folder_it_was_told_of_and_leaves_nothing_scanned_ahead(store, pools, monkeypatch):
    monkeypatch.setattr(scanning, "POOL_FOLDERS", 1)
    scanner = ProcessScanner(2)
    try:
        keys = [info.key for info in store.list_scanned("", scanner)]
    finally:
        scanner.close()

    assert keys == sorted(TREE)
    assert scanner._ahead == {} and scanner._batches == {} and not scanner._upcoming, "nothing scanned twice"
    assert scanner._scanned_folders == 33 and 0 < sum(pools[0].batches) <= 33


def test_tiny_folders_go_to_the_workers_in_batches(tmp_path, pools):
    jobs = LocalStore(tmp_path / "jobs")
    seed(jobs, {f"jobs/{i:04d}/status.json": b"{}" for i in range(600)})

    assert [i.key for i in scanned_listing(jobs, "jobs/", 2)] == [f"jobs/{i:04d}/status.json" for i in range(600)]
    batches = pools[0].batches
    assert sum(batches) == 600 and max(batches) == scanning.BATCH_FOLDERS, batches


def test_a_tree_of_few_folders_starts_no_process(tmp_path, pools):
    small = LocalStore(tmp_path / "small")
    seed(small, {f"d{i}/k{j}": b"x" for i in range(3) for j in range(50)})

    assert [i.key for i in scanned_listing(small, "", 2)] == [i.key for i in small.list()]
    assert pools == []


def test_what_is_scanned_ahead_of_a_stalled_walk_stays_bounded(tmp_path, pools, monkeypatch):
    monkeypatch.setattr(scanning, "AHEAD_FOLDERS", 5)
    monkeypatch.setattr(scanning, "POOL_FOLDERS", 2)
    big = LocalStore(tmp_path / "big")
    seed(big, {f"d{i:02d}/k{j}": b"x" for i in range(40) for j in range(2)})
    scanner = ProcessScanner(2)
    try:
        walk = big.list_scanned("", scanner)
        assert next(walk).key == "d00/k0"
        deadline = time.monotonic() + 30
        while not all(batch.done() for batch in scanner._batches) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(scanner._ahead) <= 5, "no more than AHEAD_FOLDERS folders are held ahead of the walk"
        assert [i.key for i in walk] == [f"d{i:02d}/k{j}" for i in range(40) for j in range(2)][1:]
    finally:
        scanner.close()
    assert len(pools) == 1


def test_a_killed_scanner_process_leaves_the_rest_of_the_walk_to_the_walk(store, pools, monkeypatch):
    monkeypatch.setattr(scanning, "POOL_FOLDERS", 1)
    walk = scanned_listing(store, "", 2)
    first = next(walk)
    for pid in list(pools[0]._processes):
        os.kill(pid, signal.SIGKILL)

    assert [first.key, *(i.key for i in walk)] == sorted(TREE)


def test_a_local_sync_and_verify_over_many_folders_list_through_the_scanner(tmp_path, pools):
    source, target = LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")
    objects = {f"d{i:02d}/obj-{j}": os.urandom(i + j) for i in range(24) for j in range(4)}
    seed(source, objects)

    dry = sync(source, target, dry_run=True)
    assert dry.objects_planned == 96 and dry.bytes_planned == sum(map(len, objects.values()))
    assert contents(target) == {}

    report = sync(source, target, workers=2)
    again = sync(source, target, workers=2)

    assert report.objects_copied == 96 and report.verified and contents(target) == objects
    assert again.objects_copied == 0 and again.objects_skipped == 96
    assert verify(source, target, deep=True).verified
    assert pools, "the listings of 24 folders ran through worker processes"


def test_workers_bound_the_scanner_processes_of_sync_and_verify(tmp_path, pools):
    source, target = LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")
    objects = {f"d{i:02d}/obj-{j}": os.urandom(i + j) for i in range(24) for j in range(4)}
    seed(source, objects)

    report = sync(source, target, workers=1)
    assert report.objects_copied == 96 and report.verified and contents(target) == objects
    assert verify(source, target, workers=1).verified
    assert pools == [], "--workers 1 lists in the planner's process alone"

    assert sync(source, target, workers=2).objects_skipped == 96
    assert pools and all(pool._max_workers <= 2 for pool in pools)


def test_the_cli_passes_workers_to_the_early_listing_of_a_local_target(tmp_path, pools):
    from typer.testing import CliRunner

    from app.cli import cli
    from migration.cli import register

    register(cli)
    source, target = LocalStore(tmp_path / "source"), LocalStore(tmp_path / "target")
    seed(source, {f"d{i:02d}/obj": b"x" * i for i in range(24)})
    seed(target, {f"d{i:02d}/obj": b"x" * i for i in range(24)})

    result = CliRunner().invoke(cli, ["migrate", f"file://{source.root}", f"file://{target.root}", "--workers", "1",
                                      "--json"])

    assert result.exit_code == 0, result.output
    assert pools == [], "neither the target's early listing nor the source's started a scanner process"


_PLANNER = """
import sys, time
from app.storage import LocalStore
from migration import scanning
scanning.POOL_FOLDERS = 1
walk = scanning.scanned_listing(LocalStore(sys.argv[1], create=False), "", 2)
next(walk)
print("walking", flush=True)
time.sleep(600)
"""


def test_scanner_processes_exit_when_their_planner_is_killed(store):
    planner = subprocess.Popen([sys.executable, "-c", _PLANNER, str(store.root)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert planner.stdout.readline() == "walking\n"
    planner.send_signal(signal.SIGKILL)

    # Each scanner process holds the planner's stdout until it exits.
    out, _ = planner.communicate(timeout=60)

    assert planner.returncode == -signal.SIGKILL and out == ""
