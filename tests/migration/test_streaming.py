"""The streamed engine end to end: backends that order keys differently, shards, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.storage import LocalStore
from migration.copier import sync, verify
from migration.rules import Shard
from tests.storage.test_listing_order import KEYS

from .conftest import REPO_ROOT, SPOTSHIFT, contents, seed


@pytest.mark.parametrize("direction", ["gcs->azure", "azure->gcs"])
def test_keys_the_emulators_order_differently_migrate_once_and_nothing_is_deleted(request, direction):
    names = direction.split("->")
    source = request.getfixturevalue(f"{names[0]}_store")
    target = request.getfixturevalue(f"{names[1]}_store")
    objects = {k: k.encode() * 3 for k in KEYS}
    seed(source, objects)

    first = sync(source, target, delete=True)
    target.put("\U0001F602only-on-target", b"stale")
    second = sync(source, target, delete=True)
    checked = verify(source, target)

    assert first.objects_copied == len(KEYS) and first.verified and first.objects_deleted == 0
    assert (second.objects_copied, second.objects_skipped, second.objects_deleted) == (0, len(KEYS), 1)
    assert checked.verified and checked.objects_checked == len(KEYS) and checked.objects_extra == 0
    assert contents(target) == objects


def _shard_sets(count: int, n: int) -> tuple[list[set[str]], set[str]]:
    keys = [f"p{i % 7}/obj-{i:05d}" for i in range(count)]
    return [{k for k in keys if Shard(i, n)(k)} for i in range(n)], set(keys)


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_shards_are_disjoint_and_cover_every_key(n):
    shards, everything = _shard_sets(5000, n)

    assert set().union(*shards) == everything
    assert sum(len(s) for s in shards) == len(everything)
    assert all(len(s) > len(everything) / n * 0.8 for s in shards), "slices are uneven"


def test_n_sharded_runs_copy_everything_exactly_once(tmp_path):
    source = LocalStore(tmp_path / "source")
    objects = {f"d{i % 5}/k{i:04d}": f"{i}".encode() for i in range(400)}
    seed(source, objects)
    targets = [LocalStore(tmp_path / f"target-{i}") for i in range(4)]
    shared = LocalStore(tmp_path / "shared")

    reports = [sync(source, targets[i], shard=f"{i}/4") for i in range(4)]
    shared_reports = [sync(source, shared, shard=f"{i}/4") for i in range(4)]
    slices = [set(contents(t)) for t in targets]

    assert all(r.verified for r in reports + shared_reports)
    assert sum(len(s) for s in slices) == len(objects) and set().union(*slices) == set(objects)
    assert sum(r.objects_copied for r in shared_reports) == len(objects)
    assert contents(shared) == objects
    assert all(verify(source, shared, shard=f"{i}/4").objects_checked == len(slices[i]) for i in range(4))
    assert verify(source, targets[1], shard="1/4").verified
    assert not verify(source, targets[1], shard="2/4").verified


def test_a_sharded_delete_only_touches_its_own_slice(tmp_path):
    source, target = LocalStore(tmp_path / "s"), LocalStore(tmp_path / "t")
    seed(target, {f"old{i}": b"x" for i in range(40)})

    report = sync(source, target, delete=True, max_delete=40, shard="0/2")

    assert set(contents(target)) == {f"old{i}" for i in range(40) if not Shard(0, 2)(f"old{i}")}
    assert report.objects_deleted == 40 - len(contents(target))


def test_cli_shard_is_validated_before_anything_opens(tmp_path):
    result = subprocess.run([*SPOTSHIFT, "migrate", f"file://{tmp_path}/a", f"file://{tmp_path}/b", "--shard", "4/4"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2 and "invalid shard" in result.stderr
    assert not (tmp_path / "b").exists()


def _objects_in(root: Path) -> int:
    return sum(len(files) for path, _, files in os.walk(root) if ".spotshift" not in Path(path).parts)


def test_a_run_killed_in_the_middle_of_a_streamed_plan_resumes(tmp_path):
    source = LocalStore(tmp_path / "source")
    count = 3000
    objects = {f"d{i // 300:02d}/obj-{i:05d}": os.urandom(2048) for i in range(count)}
    seed(source, objects)
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    command = [*SPOTSHIFT, "migrate", f"file://{source.root}", f"file://{target_dir}", "--json", "--workers", "4"]

    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _objects_in(target_dir) < 50 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    landed = _objects_in(target_dir)
    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(resumed.stdout)

    assert proc.returncode == -signal.SIGKILL, "the first run finished before it was killed"
    assert 0 < landed < count
    assert resumed.returncode == 0 and report["verified"]
    assert report["objects_skipped"] == landed, "objects copied before the kill were copied again"
    assert report["objects_skipped"] + report["objects_copied"] == count
    assert contents(LocalStore(target_dir)) == objects
