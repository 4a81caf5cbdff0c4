"""LocalStore specifics: crash safety of conditional writes, its own directories, OS errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from app.storage import (
    LocalStore,
    ObjectStore,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from app.storage import local as local_module


def test_a_crash_between_sidecar_and_data_never_lets_a_stale_conditional_write_win(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    old = store.put("leases/job", b'{"worker": "a"}')
    real_replace = os.replace

    def crash_on_data(src, dst):
        if not str(dst).startswith(str(store.root / ".spotshift")):
            raise KeyboardInterrupt("process killed between the sidecar and the data rename")
        return real_replace(src, dst)

    monkeypatch.setattr(local_module.os, "replace", crash_on_data)
    with pytest.raises(KeyboardInterrupt):
        store.put("leases/job", b'{"worker": "b"}', if_version=old.version)
    monkeypatch.setattr(local_module.os, "replace", real_replace)

    with pytest.raises(PreconditionFailed):
        store.put("leases/job", b'{"worker": "a", "renewed": true}', if_version=old.version)
    assert store.get("leases/job") == b'{"worker": "a"}', "the interrupted write never became visible"
    info = store.head("leases/job")
    assert info.md5 is None and info.metadata == {}, "a sidecar for other bytes is not trusted (a copy redoes it)"


def test_reading_a_directory_writes_nothing_into_it(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "one.txt").write_bytes(b"1")
    store = LocalStore(tmp_path / "data", create=False)

    listed = [info.key for info in store.list()]
    store.head("a/one.txt")
    body = store.get("a/one.txt")
    store.ping()

    assert listed == ["a/one.txt"] and body == b"1"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["a"], "no .spotshift/ made by reads"


def test_removing_its_own_directory_does_not_break_the_store(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("a", b"1")
    shutil.rmtree(store.root / ".spotshift")

    store.ping()
    store.put("b", b"2")

    assert store.get("a") == b"1" and store.get("b") == b"2"


def test_an_unusable_root_is_a_configuration_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(StorageConfigError, match="cannot be used"):
        LocalStore(blocker / "store")


def test_os_failures_surface_as_storage_errors(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module, "_write_all", disk_full)

    with pytest.raises(StorageError, match="No space left on device"):
        store.put("k", b"v")


def test_the_api_refuses_an_unusable_local_path_with_exit_2_and_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**os.environ, "STORAGE_BACKEND": "local", "LOCAL_STORAGE_PATH": str(blocker / "store")}

    done = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "worker", "--burst"],
                          env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOCAL_STORAGE_PATH" in lines[0] and "Traceback" not in done.stderr


def _two_keys_on_different_stripes(store: LocalStore) -> tuple[str, str]:
    first = "held/a"
    other = next(f"free/{i}" for i in range(1000) if store._lock_path(f"free/{i}") != store._lock_path(first))
    return first, other


def test_a_write_waits_only_for_its_own_key_not_for_the_whole_store(tmp_path):
    import fcntl
    import threading

    store = LocalStore(tmp_path / "store")
    store.put("warm-up", b"x")  # makes .spotshift/locks
    held, free = _two_keys_on_different_stripes(store)
    lock_fd = os.open(store._lock_path(held), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another writer is in the middle of writing `held`
    blocked = threading.Thread(target=store.put, args=(held, b"later"))
    try:
        blocked.start()

        store.put(free, b"now")

        assert store.get(free) == b"now"
        assert blocked.is_alive() and not (store.root / held).exists(), "the write of the held key went ahead"
    finally:
        os.close(lock_fd)
    blocked.join(30)
    assert store.get(held) == b"later"


def test_batched_writes_skip_their_fsyncs_and_sync_once_at_the_end(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    calls = {"fsync": 0, "sync": 0}
    real_fsync = os.fsync
    monkeypatch.setattr(local_module.os, "fsync", lambda fd: (calls.__setitem__("fsync", calls["fsync"] + 1),
                                                              real_fsync(fd))[1])
    monkeypatch.setattr(local_module.os, "sync", lambda: calls.__setitem__("sync", calls["sync"] + 1))

    with store.batched():
        for i in range(5):
            store.put(f"k{i}", b"x" * i)
        inside = dict(calls)
    store.put("after", b"y")

    assert inside == {"fsync": 0, "sync": 0} and calls["sync"] == 1
    assert calls["fsync"] == 4, "a write outside batched() fsyncs data, sidecar and both folders"
    assert [store.get(f"k{i}") for i in range(5)] == [b"x" * i for i in range(5)]


def test_a_batch_that_writes_nothing_does_not_sync_the_filesystem(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.put("k", b"x")
    syncs = []
    monkeypatch.setattr(local_module.os, "sync", lambda: syncs.append(1))

    with store.batched():
        list(store.list(""))
        store.get("k")

    assert syncs == []


_AWKWARD = ["a-b", "a.b", "a/x", "a/y/z", "a/y0", "a0", "b/c/d", "b/c/e", "b/cd", "bb", "c/1", "c/2", "é", "z/z"]


@pytest.mark.parametrize("prefix", ["", "a", "a/", "b/c", "c/", "none/"])
@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_native_list_page_pages_exactly_like_the_generic_default(tmp_path, prefix, limit):
    store = LocalStore(tmp_path / "store")
    for key in _AWKWARD:
        store.put(key, key.encode(), metadata={"k": "v"})

    def pages(list_page):
        out, token = [], None
        while True:
            page = list_page(prefix, limit, token)
            out.append(([(i.key, i.size, i.md5, i.metadata) for i in page.items], page.token))
            if page.token is None:
                return out
            token = page.token

    native = pages(store.list_page)
    generic = pages(lambda p, n, t: ObjectStore.list_page(store, p, n, t))

    assert native == generic
    assert [key for items, _ in native for key, *_ in items] == [k for k in sorted(_AWKWARD) if k.startswith(prefix)]


def test_list_page_reads_no_folder_that_lies_wholly_before_its_token(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    for key in ["a/1", "a/2", "b/1", "b/2", "c/1", "c/2"]:
        store.put(key, b"x")
    scanned: list[str] = []
    real = os.scandir
    monkeypatch.setattr(local_module.os, "scandir",
                        lambda path: (scanned.append(os.path.relpath(path, store.root)), real(path))[1])

    page = store.list_page("", 2, "b/1")

    assert [i.key for i in page.items] == ["b/2", "c/1"] and page.token == "c/1"
    assert "a" not in scanned, scanned


def test_a_listing_reads_a_sidecar_only_when_a_field_beyond_key_and_size_is_asked_for(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.put("d/k", b"abc", content_type="text/plain", metadata={"m": "1"})
    reads: list[str] = []
    real = store._sidecar
    monkeypatch.setattr(store, "_sidecar", lambda key: (reads.append(key), real(key))[1])

    (info,) = store.list("")
    assert (info.key, info.size, reads) == ("d/k", 3, [])

    assert (info.content_type, info.metadata) == ("text/plain", {"m": "1"}) and info.version
    assert reads == ["d/k"], "one sidecar read fills every field"
    assert info == store.head("d/k")


def test_a_listed_object_replaced_before_its_fields_are_read_says_only_what_its_listing_saw(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("k", b"old", metadata={"m": "old"})
    (info,) = store.list("")

    store.put("k", b"newer bytes", metadata={"m": "new"})

    assert info.size == 3 and info.md5 is None and info.metadata == {}, "never the new bytes' checksum"
    assert store.head("k").metadata == {"m": "new"}


def test_a_sidecar_cut_short_by_a_crash_leaves_only_what_stat_knows(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("a/obj", b"payload", content_type="text/plain", metadata={"k": "v"})
    sidecar = store.root / ".spotshift" / "meta" / "a" / "obj.json"
    sidecar.write_bytes(sidecar.read_bytes()[:20])  # the in-place write stopped half-way

    head = store.head("a/obj")
    (listed,) = list(store.list())

    assert head.md5 is None and head.metadata == {} and head.content_type is None
    assert listed.md5 is None and listed.version == head.version
    assert store.get("a/obj") == b"payload"
    again = store.put("a/obj", b"payload", metadata={"k": "v"})
    assert store.head("a/obj").md5 == again.md5 is not None


def test_a_listing_that_meets_a_sidecar_being_written_waits_for_the_writer(tmp_path):
    store = LocalStore(tmp_path / "store")
    written = store.put("k", b"bytes")
    sidecar = store.root / ".spotshift" / "meta" / "k.json"
    whole = json.loads(sidecar.read_text())
    writer = LocalStore(store.root)
    got: list[str | None] = []
    with writer._locked("k"):  # another writer holds the key's stripe ...
        sidecar.write_text(json.dumps(whole)[:10])  # ... half-way through the sidecar
        reader = threading.Thread(target=lambda: got.append(next(iter(store.list())).crc32c))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive(), "the listing took a half-written sidecar without waiting"
        sidecar.write_text(json.dumps({**whole, "crc32c": "0000abcd"}))
    reader.join(10)

    assert got == ["0000abcd"] and written.crc32c != "0000abcd"


def _temp_files(store: LocalStore) -> list[str]:
    tmp = store.root / ".spotshift" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def test_new_and_replaced_objects_land_whole_and_leave_no_temporary_file(tmp_path):
    store = LocalStore(tmp_path / "store")

    first = store.put("a/b/new", b"one")
    second = store.put("a/b/new", b"two, longer", metadata={"k": "v"})

    assert store.get("a/b/new") == b"two, longer" and store.head("a/b/new") == second
    assert second.md5 != first.md5 and [i.key for i in store.list()] == ["a/b/new"]
    assert _temp_files(store) == []


def test_a_put_whose_body_fails_half_way_leaves_nothing_behind(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put("kept", b"old bytes")

    def body():
        yield b"first half"
        raise TransientStorageError("source went away")

    for key in ("fresh", "kept"):
        with pytest.raises(TransientStorageError):
            store.put(key, body())

    assert [i.key for i in store.list()] == ["kept"] and store.get("kept") == b"old bytes"
    assert _temp_files(store) == []


def test_a_filesystem_without_unnamed_files_gets_named_temporary_files(tmp_path, monkeypatch):
    real_open = os.open
    unnamed_asked = []

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            unnamed_asked.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(local_module.os, "open", no_tmpfile)
    store = LocalStore(tmp_path / "store")

    store.put("x/one", b"1")
    store.put("x/one", b"11")
    store.put("x/two", b"2")

    assert len(unnamed_asked) == 1, "the first refusal is remembered"
    assert {i.key: store.get(i.key) for i in store.list()} == {"x/one": b"11", "x/two": b"2"}
    assert _temp_files(store) == []
