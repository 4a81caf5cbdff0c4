"""``spotshift migrate`` / ``spotshift verify`` as subprocesses on fake-gcs-server and Azurite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app.storage import LocalStore
from app.storage.emulators import AZURITE_KEY

from .conftest import AWKWARD, REPO_ROOT, SPOTSHIFT, contents, seed

pytestmark = pytest.mark.emulator

MIB = 1024 * 1024


def _json(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.stdout, f"no output; stderr: {result.stderr}"
    return json.loads(result.stdout)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


def test_migrate_then_verify_exit_0_with_a_json_report(spotshift, gcs_store, gcs_bucket, azure_store, azure_container):
    seed(gcs_store, AWKWARD)

    first = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--json")
    second = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--json")
    checked = spotshift("verify", f"gs://{gcs_bucket}", f"az://{azure_container}", "--deep", "--json")

    assert first.returncode == 0, first.stderr
    report = _json(first)
    assert report["objects_copied"] == len(AWKWARD) and report["verified"] is True
    assert report["source"] == f"gs://{gcs_bucket}" and report["target"] == f"az://{azure_container}"
    assert "AccountKey" not in first.stdout and AZURITE_KEY not in first.stdout
    assert second.returncode == 0 and _json(second)["objects_copied"] == 0
    assert _json(second)["objects_skipped"] == len(AWKWARD)
    assert checked.returncode == 0 and _json(checked)["objects_matched"] == len(AWKWARD)
    assert contents(azure_store) == AWKWARD


def test_text_summary_names_both_locations_and_the_counts(spotshift, gcs_store, gcs_bucket, azure_container):
    seed(gcs_store, {"a": b"a", "b": b"bb"})

    result = spotshift("migrate", f"gs://{gcs_bucket}/", f"az://{azure_container}")

    assert result.returncode == 0, result.stderr
    assert f"migrate gs://{gcs_bucket} -> az://{azure_container}" in result.stdout
    assert "copied" in result.stdout and "verified" in result.stdout and "yes" in result.stdout


def test_verify_exits_1_and_names_a_blob_altered_behind_the_engines_back(spotshift, gcs_store, gcs_bucket,
                                                                         azurite, azure_container):
    from azure.storage.blob import BlobServiceClient

    seed(gcs_store, {"a.txt": b"original", "b.txt": b"fine"})
    assert spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}").returncode == 0
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        blob = service.get_blob_client(azure_container, "a.txt")
        blob.upload_blob(b"ORIGINAL", overwrite=True, metadata=blob.get_blob_properties().metadata)

    result = spotshift("verify", f"gs://{gcs_bucket}", f"az://{azure_container}")

    assert result.returncode == 1
    assert "a.txt: target bytes altered" in result.stdout
    assert "b.txt" not in result.stdout


def test_azure_to_gcs_with_prefixes_and_filters(spotshift, azure_store, azure_container, gcs_store, gcs_bucket):
    seed(azure_store, {"jobs/1.json": b"1", "jobs/2.json": b"2", "leases/1": b"l", "tmp/x": b"t"}, prefix="app/")

    result = spotshift("migrate", f"az://{azure_container}/app", f"gs://{gcs_bucket}/restored", "--exclude",
                       "leases/*", "-x", "tmp/*", "--json")

    assert result.returncode == 0, result.stderr
    assert _json(result)["objects_copied"] == 2
    assert contents(gcs_store) == {"restored/jobs/1.json": b"1", "restored/jobs/2.json": b"2"}


def test_dry_run_prints_the_plan_and_writes_nothing(spotshift, gcs_store, gcs_bucket, azure_store, azure_container):
    seed(gcs_store, {"new.txt": b"n"})
    azure_store.put("old.txt", b"o")

    result = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--dry-run", "--delete")

    assert result.returncode == 0, result.stderr
    assert "copy    new.txt  (missing on target)" in result.stdout
    assert "delete  old.txt" in result.stdout
    assert [i.key for i in azure_store.list()] == ["old.txt"]


def test_a_dry_run_shows_a_key_with_a_newline_or_a_terminal_escape_escaped_on_its_own_line(spotshift, tmp_path):
    source = LocalStore(tmp_path / "source")
    for key in ["line\nbreak", "red\x1b[31m", "plain/\u00e9"]:
        source.put(key, b"x")
    target = LocalStore(tmp_path / "target")

    result = spotshift("migrate", f"file://{source.root}", f"file://{target.root}", "--dry-run")

    assert result.returncode == 0, result.stderr
    plan = [line for line in result.stdout.splitlines() if line.startswith("copy ")]
    assert plan == ["copy    line\\nbreak  (missing on target)", "copy    plain/\u00e9  (missing on target)",
                    "copy    red\\x1b[31m  (missing on target)"]
    assert "\x1b" not in result.stdout


def test_delete_over_max_delete_exits_2_and_leaves_everything(spotshift, gcs_store, gcs_bucket, azure_store,
                                                              azure_container):
    seed(gcs_store, {"keep.txt": b"k"})
    seed(azure_store, {f"stale/{i}": b"s" for i in range(3)})

    refused = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--delete", "--max-delete", "2")
    allowed = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--delete", "--max-delete", "3",
                        "--json")

    assert refused.returncode == 2
    assert "refusing to delete 3 objects" in _one_error_line(refused)
    assert allowed.returncode == 0 and _json(allowed)["objects_deleted"] == 3
    assert [i.key for i in azure_store.list()] == ["keep.txt"]


def test_missing_bucket_and_missing_container_exit_2_with_one_line(spotshift, gcs_bucket, azure_container):
    no_bucket = spotshift("migrate", "gs://no-such-bucket-spotshift", f"az://{azure_container}")
    no_container = spotshift("migrate", f"gs://{gcs_bucket}", "az://no-such-container")

    assert no_bucket.returncode == 2
    assert "gs://no-such-bucket-spotshift" in _one_error_line(no_bucket)
    assert no_container.returncode == 2
    assert "az://no-such-container" in _one_error_line(no_container)


@pytest.mark.parametrize("name", ["aa", "Bad_Name"])
def test_an_invalid_container_name_exits_2_with_one_line(spotshift, gcs_bucket, name):
    done = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{name}")

    assert done.returncode == 2 and "invalid container name" in _one_error_line(done)


def test_bad_azure_credentials_exit_2_without_leaking_the_key(spotshift, gcs_store, gcs_bucket, azurite,
                                                              azure_container):
    seed(gcs_store, {"a": b"a"})
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    bad = azurite.connection_string.replace(AZURITE_KEY, wrong_key)

    result = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}",
                       env={"AZURE_STORAGE_CONNECTION_STRING": bad})

    assert result.returncode == 2
    line = _one_error_line(result)
    assert "access denied" in line
    assert wrong_key not in result.stderr + result.stdout


def test_no_azure_account_configured_exits_2(spotshift, gcs_bucket, azure_container):
    result = spotshift("verify", f"gs://{gcs_bucket}", f"az://{azure_container}",
                       env={"AZURE_STORAGE_CONNECTION_STRING": None})

    assert result.returncode == 2
    assert "AZURE_STORAGE_CONNECTION_STRING" in _one_error_line(result)


def test_bad_and_overlapping_locations_exit_2(spotshift, gcs_bucket):
    bad = spotshift("migrate", "s3://bucket", f"gs://{gcs_bucket}")
    overlap = spotshift("migrate", f"gs://{gcs_bucket}/a", f"gs://{gcs_bucket}/a/b")

    assert bad.returncode == 2 and "unsupported location" in _one_error_line(bad)
    assert overlap.returncode == 2 and "overlap" in _one_error_line(overlap)


def test_nested_or_linked_directories_overlap_and_exit_2(spotshift, tmp_path):
    outer = tmp_path / "outer"
    (outer / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(outer)

    nested = spotshift("migrate", f"file://{outer}", f"file://{outer}/sub")
    linked = spotshift("migrate", f"file://{tmp_path}/link/sub", f"file://{outer}")

    for done in (nested, linked):
        assert done.returncode == 2 and "overlap" in _one_error_line(done)
    assert sorted(p.name for p in outer.iterdir()) == ["sub"], "nothing was written"


@pytest.mark.slow
def test_run_killed_midway_resumes_and_copies_only_the_rest(cli_env, gcs_store, gcs_bucket, azure_store,
                                                            azure_container, spotshift):
    objects = {f"batch/{i:04d}.bin": os.urandom(128 * 1024) for i in range(120)}
    seed(gcs_store, objects)
    proc = subprocess.Popen([*SPOTSHIFT, "migrate", f"gs://{gcs_bucket}", f"az://{azure_container}",
                             "--workers", "1", "--json"], env=cli_env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sum(1 for _ in azure_store.list()) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    time.sleep(0.5)  # let the emulator finish or drop the request that was cut off
    landed = sum(1 for _ in azure_store.list())

    resumed = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--json")
    checked = spotshift("verify", f"gs://{gcs_bucket}", f"az://{azure_container}", "--deep", "--json")

    assert proc.returncode == -signal.SIGKILL, "the first run must have been killed, not finished"
    assert 10 <= landed < len(objects)
    report = _json(resumed)
    assert resumed.returncode == 0
    assert report["objects_copied"] == len(objects) - landed
    assert report["objects_skipped"] == landed
    assert checked.returncode == 0 and _json(checked)["objects_matched"] == len(objects)


_PEAK_RSS_CHILD = """
import os, sys
from app.storage.azure import AzureBlobStore
from app.storage.gcs import GcsStore
from migration.copier import sync

source = GcsStore(sys.argv[1])
target = AzureBlobStore(sys.argv[2], connection_string=os.environ["AZURE_STORAGE_CONNECTION_STRING"])
report = sync(source, target, include=[sys.argv[3]])
assert report.verified and report.objects_copied == 1, report.to_dict()
# VmHWM: this process's own peak RSS (ru_maxrss can include the parent's memory at spawn).
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(peak.split()[1]) // 1024)
"""


@pytest.mark.slow
def test_a_64_mib_object_is_copied_with_bounded_memory(cli_env, gcs_store, gcs_bucket, azure_store,
                                                       azure_container):
    def chunks():
        for i in range(16):
            yield bytes([i]) * (4 * MIB)

    gcs_store.put("big.bin", chunks(), size=64 * MIB, content_type="application/octet-stream")
    gcs_store.put("tiny.bin", b"t")

    def peak_mib(key: str) -> int:
        result = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, gcs_bucket, azure_container, key],
                                env=cli_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.strip())

    baseline = peak_mib("tiny.bin")
    big = peak_mib("big.bin")

    assert azure_store.head("big.bin").size == 64 * MIB
    assert big - baseline < 24, f"copying 64 MiB raised the peak RSS by {big - baseline} MiB (baseline {baseline})"


def test_dry_run_lists_deletions_past_the_limit_and_warns(spotshift, gcs_bucket, azure_store, azure_container):
    seed(azure_store, {f"stale/{i}": b"s" for i in range(3)})

    result = spotshift("migrate", f"gs://{gcs_bucket}", f"az://{azure_container}", "--dry-run", "--delete",
                       "--max-delete", "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.count("delete  stale/") == 3
    assert "a real run would refuse: 3 deletions" in result.stderr
    assert len(list(azure_store.list())) == 3


def test_help_of_both_commands_renders(spotshift):
    migrate_help = spotshift("migrate", "--help")
    verify_help = spotshift("verify", "--help")

    assert migrate_help.returncode == 0, migrate_help.stderr
    assert "--max-delete" in migrate_help.stdout and "--dry-run" in migrate_help.stdout
    assert verify_help.returncode == 0, verify_help.stderr
    assert "--deep" in verify_help.stdout


def test_the_migration_commands_load_the_engine_only_once_the_target_is_listing():
    # `spotshift migrate` opens the target and starts its listing with the planner's merge and
    # rules alone; the copier, its process pools and the reports are imported after that.
    probe = ("import sys; import migration.cli; from migration.merge import EarlyListing; "
             "from migration.rules import Shard, UsageError; "
             "print(sorted(m for m in ('migration.copier', 'migration.scanning', 'migration.report', "
             "'multiprocessing') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_a_gcs_to_azure_run_copies_without_importing_grpc(cli_env, gcs_store, gcs_bucket, azure_store,
                                                         azure_container):
    # The venv has grpc (Pulumi's), the workload image has not; the engine speaks REST only,
    # so the CLI opens its stores with it refused instead of paying its RSS and import.
    seed(gcs_store, {"a": b"a", "b/c": b"bc"})
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'"
             " and sys.modules[m] is not None), 'google.api_core' in sys.modules, file=sys.stderr))\n"
             "from app.cli import main\nmain()")

    result = subprocess.run([sys.executable, "-c", probe, "migrate", f"gs://{gcs_bucket}", f"az://{azure_container}",
                             "--json"], env=cli_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert _json(result)["objects_copied"] == 2 and contents(azure_store) == {"a": b"a", "b/c": b"bc"}
    assert result.stderr.strip().splitlines()[-1] == "loaded: [] True", result.stderr


def test_grpc_is_refused_only_while_the_stores_open_and_never_when_already_imported():
    probe = """
import sys
from migration.cli import _without_grpc
with _without_grpc():
    import google.api_core.exceptions as exceptions
    try:
        import grpc
    except ImportError:
        refused = True
    else:
        refused = False
import grpc  # after the block: imports as usual
with _without_grpc():
    import grpc as again  # already imported: left alone
print(refused, exceptions.grpc is None, again is grpc, sys.modules["grpc"] is grpc)
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "True", "True"], result.stderr


_ARENA_PROBE = """
import ctypes, sys, threading
from migration.cli import _cap_malloc_arenas
capped = _cap_malloc_arenas()
both = threading.Barrier(8)
def work():
    both.wait()
    kept = [bytearray(4096) for _ in range(200)]
    both.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
print(capped)
"""


@pytest.mark.parametrize(("env", "capped", "arenas"), [({}, "True", 2), ({"MALLOC_ARENA_MAX": "3"}, "False", 3)])
def test_the_engine_caps_malloc_arenas_unless_the_environment_chose(env, capped, arenas):
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    result = subprocess.run([sys.executable, "-c", _ARENA_PROBE], env={**base, **env}, cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True)

    assert result.stdout.split() == [capped]
    # Eight threads allocating at once would each take an arena of their own (up to 8 per core).
    assert sum(line.startswith("Arena ") for line in result.stderr.splitlines()) == arenas, result.stderr


def test_the_package_still_exports_the_engine_api():
    import migration
    from migration import copier, report

    for name in migration.__all__:
        home = copier if hasattr(copier, name) else report
        assert getattr(migration, name) is getattr(home, name), name
    assert set(migration.__all__) <= set(dir(migration))
    with pytest.raises(AttributeError):
        migration.no_such_name  # noqa: B018
