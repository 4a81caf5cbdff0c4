"""The copy engine's Python API on fake-gcs-server and Azurite: GCS → Azure, Azure → GCS, verify, digests."""

from __future__ import annotations

import base64
import hashlib

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from migration.copier import (
    LEGACY_PROVENANCE_KEYS,
    PROVENANCE_METADATA_KEY,
    DeleteLimitExceeded,
    manifest_digest,
    provenance_of,
    sync,
    verify,
)

from .conftest import AWKWARD, contents, seed

pytestmark = pytest.mark.emulator


# -- GCS → Azure on the emulators ---------------------------------------------------


def test_full_copy_reports_counts_and_lands_every_awkward_key(gcs_store, azure_store):
    seed(gcs_store, AWKWARD)

    report = sync(gcs_store, azure_store)

    assert report.objects_planned == report.objects_copied == len(AWKWARD)
    assert report.bytes_copied == report.bytes_planned == sum(len(v) for v in AWKWARD.values())
    assert (report.objects_failed, report.objects_skipped, report.failures) == (0, 0, [])
    assert report.verified is True
    assert contents(azure_store) == AWKWARD
    data = report.to_dict()
    assert data["source"] == gcs_store.url and data["target"] == azure_store.url
    assert data["objects_copied"] == len(AWKWARD) and data["verified"] is True


def test_second_run_copies_nothing_and_decides_from_listings(gcs_store, azure_store):
    seed(gcs_store, AWKWARD)
    sync(gcs_store, azure_store)

    report = sync(gcs_store, azure_store)

    assert report.objects_copied == 0
    assert report.objects_skipped == len(AWKWARD)
    assert report.bytes_skipped == sum(len(v) for v in AWKWARD.values())
    assert report.verified is True


def test_changed_object_of_the_same_size_is_recopied(gcs_store, azure_store):
    seed(gcs_store, {"a.bin": b"A" * 1000, "b.bin": b"B" * 1000})
    sync(gcs_store, azure_store)
    gcs_store.put("a.bin", b"Z" * 1000)

    report = sync(gcs_store, azure_store)

    assert report.objects_copied == 1 and report.objects_skipped == 1
    assert report.reasons == {"content differs": 1}
    assert azure_store.get("a.bin") == b"Z" * 1000


def test_content_type_encoding_cache_control_and_metadata_are_preserved_with_provenance(gcs_store, azure_store):
    gcs_store.put("img/cat.png", b"\x89PNG" * 100, content_type="image/png", cache_control="public, max-age=60",
                  content_encoding="identity", metadata={"origin": "upload", "owner_id": "42"})
    source = gcs_store.head("img/cat.png")

    sync(gcs_store, azure_store)

    copied = azure_store.head("img/cat.png")
    assert copied.content_type == "image/png"
    assert copied.cache_control == "public, max-age=60"
    assert copied.content_encoding == "identity"
    assert copied.metadata["origin"] == "upload" and copied.metadata["owner_id"] == "42"
    prov = provenance_of(copied)
    assert prov.source == f"{gcs_store.url}/img/cat.png"
    assert prov.version == source.version
    assert prov.md5 == source.md5 == hashlib.md5(b"\x89PNG" * 100).hexdigest()
    assert prov.crc32c == source.crc32c
    # One metadata entry for all of it: Azure gives a blob 8 KiB of metadata in all.
    assert sorted(copied.metadata) == ["origin", "owner_id", PROVENANCE_METADATA_KEY]


def test_a_copy_by_an_earlier_version_with_one_entry_per_field_is_still_up_to_date(gcs_store, azure_store):
    gcs_store.put("old/a.txt", b"alpha", content_type="text/plain", metadata={"origin": "o"})
    gcs_store.put("old/b.txt", b"beta", content_type="text/plain")
    sync(gcs_store, azure_store)
    # Rewrite both copies as the engine before the packed entry left them.
    for key in ("old/a.txt", "old/b.txt"):
        source, copy = gcs_store.head(key), azure_store.head(key)
        legacy = {name: getattr(provenance_of(copy), field) for name, field in LEGACY_PROVENANCE_KEYS.items()}
        user = {k: v for k, v in copy.metadata.items() if k != PROVENANCE_METADATA_KEY}
        azure_store.put(key, azure_store.get(key), content_type="text/plain", metadata={**user, **legacy},
                        expected_md5=source.md5, expected_crc32c=source.crc32c)
    gcs_store.put("old/b.txt", b"beta 2", content_type="text/plain")

    report = sync(gcs_store, azure_store)

    assert report.objects_copied == 1 and report.reasons == {"size differs": 1} and report.verified
    assert provenance_of(azure_store.head("old/a.txt")).md5 == gcs_store.head("old/a.txt").md5
    assert "spotshift_source_md5" in azure_store.head("old/a.txt").metadata
    rewritten = azure_store.head("old/b.txt").metadata
    assert PROVENANCE_METADATA_KEY in rewritten and "spotshift_source_md5" not in rewritten
    assert verify(gcs_store, azure_store, deep=True).verified
    assert manifest_digest(gcs_store) == manifest_digest(azure_store)


def test_gcs_metadata_azure_cannot_name_directly_is_carried_and_then_unchanged(gcs_store, azure_store):
    metadata = {"content-lang": "fr", "x-goog-meta-style": "ok", "note": "caf\u00e9"}
    gcs_store.put("doc.txt", b"bonjour", content_type="text/plain", metadata=metadata)

    first = sync(gcs_store, azure_store)
    second = sync(gcs_store, azure_store)
    check = verify(gcs_store, azure_store)

    assert first.objects_copied == 1 and first.objects_failed == 0 and first.verified
    assert {k: v for k, v in azure_store.head("doc.txt").metadata.items() if k in metadata} == metadata
    assert second.objects_copied == 0 and second.objects_skipped == 1
    assert check.verified


def test_a_key_with_a_backslash_fails_on_azure_instead_of_landing_elsewhere(gcs_store, azure_store):
    gcs_store.put("back\\slash", b"x")
    gcs_store.put("fine", b"y")

    report = sync(gcs_store, azure_store)

    assert report.objects_copied == 1 and report.objects_failed == 1 and not report.verified
    assert "turns" in report.failures[0].reason
    assert [info.key for info in azure_store.list()] == ["fine"]


def test_provenance_of_an_awkward_key_is_printable_ascii(gcs_store, azure_store):
    key = "unicode/caf\u00e9 #1 50%.txt"
    gcs_store.put(key, b"x")

    sync(gcs_store, azure_store)

    value = azure_store.head(key).metadata[PROVENANCE_METADATA_KEY]
    assert value.isascii() and value.isprintable()
    assert provenance_of(azure_store.head(key)).source == f"{gcs_store.url}/unicode/caf%C3%A9%20%231%2050%25.txt"


def test_source_metadata_change_is_carried_over(gcs_store, azure_store):
    gcs_store.put("doc.json", b"{}", content_type="application/json", metadata={"status": "queued"})
    sync(gcs_store, azure_store)
    gcs_store.put("doc.json", b"{}", content_type="application/json", metadata={"status": "done"})

    report = sync(gcs_store, azure_store)

    assert report.objects_copied == 1 and report.reasons == {"user metadata differs": 1}
    assert azure_store.head("doc.json").metadata["status"] == "done"


def test_prefix_maps_onto_prefix_and_nothing_outside_moves(gcs_store, azure_store):
    seed(gcs_store, {"a.txt": b"a", "sub/b.txt": b"b"}, prefix="data/")
    seed(gcs_store, {"outside.txt": b"o", "data2/not-in-prefix.txt": b"n"})
    azure_store.put("other/keep.txt", b"keep")

    report = sync(gcs_store, azure_store, source_prefix="data", target_prefix="backup/2024", delete=True)

    assert report.objects_copied == 2 and report.objects_deleted == 0
    assert report.target == f"{azure_store.url}/backup/2024"
    assert contents(azure_store, "backup/2024/") == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert sorted(i.key for i in azure_store.list()) == ["backup/2024/a.txt", "backup/2024/sub/b.txt",
                                                         "other/keep.txt"]
    assert manifest_digest(gcs_store, "data/") == manifest_digest(azure_store, "backup/2024/")


def test_azure_to_gcs_rollback_copies_everything_and_then_nothing(azure_store, gcs_store):
    seed(azure_store, AWKWARD, content_type="text/plain", metadata={"origin": "azure"})

    first = sync(azure_store, gcs_store)
    second = sync(azure_store, gcs_store)

    assert first.objects_copied == len(AWKWARD) and first.verified
    assert second.objects_copied == 0 and second.objects_skipped == len(AWKWARD) and second.verified
    assert contents(gcs_store) == AWKWARD
    assert gcs_store.head("plain.txt").content_type == "text/plain"
    assert gcs_store.head("plain.txt").metadata["origin"] == "azure"


def test_round_trip_gcs_to_azure_to_gcs_keeps_content_and_replaces_provenance(gcs_store, azure_store, fake_gcs):
    from app.storage.gcs import GcsStore
    from tests.conftest import unique_name

    seed(gcs_store, AWKWARD, metadata={"origin": "gcs"})
    back_name = unique_name("back")
    fake_gcs.create_bucket(back_name)
    back = GcsStore(back_name, project=fake_gcs.project)

    sync(gcs_store, azure_store)
    report = sync(azure_store, back)

    assert report.verified and contents(back) == AWKWARD
    info = back.head("plain.txt")
    assert info.metadata["origin"] == "gcs"
    assert provenance_of(info).source == f"{azure_store.url}/plain.txt"
    assert manifest_digest(gcs_store) == manifest_digest(azure_store) == manifest_digest(back)
    back.close()


def test_include_and_exclude_globs_filter_relative_keys(gcs_store, azure_store):
    seed(gcs_store, {"jobs/1.json": b"1", "jobs/2.json": b"2", "jobs/2.tmp": b"t", "leases/1": b"l",
                     "results/1.png": b"r"}, prefix="app/")

    report = sync(gcs_store, azure_store, source_prefix="app/", include=["jobs/*", "leases/*"],
                  exclude=["*.tmp", "leases/*"])

    assert report.objects_copied == 2
    assert sorted(i.key for i in azure_store.list()) == ["jobs/1.json", "jobs/2.json"]


def test_delete_removes_target_objects_absent_from_the_source_but_not_excluded_ones(gcs_store, azure_store):
    seed(gcs_store, {"keep.txt": b"k"})
    seed(azure_store, {"stale-1.txt": b"s", "stale-2.txt": b"s", "leases/held": b"l"})

    report = sync(gcs_store, azure_store, delete=True, exclude=["leases/*"])

    assert report.objects_deleted == 2 and report.objects_to_delete == 2
    assert sorted(i.key for i in azure_store.list()) == ["keep.txt", "leases/held"]


def test_delete_over_the_limit_refuses_before_writing_anything(gcs_store, azure_store):
    seed(gcs_store, {"new.txt": b"n"})
    stale = {f"stale/{i}": b"s" for i in range(4)}
    seed(azure_store, stale)

    with pytest.raises(DeleteLimitExceeded, match="refusing to delete 4 objects"):
        sync(gcs_store, azure_store, delete=True, max_delete=3)

    assert sorted(i.key for i in azure_store.list()) == sorted(stale), "nothing copied, nothing deleted"


def test_dry_run_plans_and_writes_nothing(gcs_store, azure_store):
    seed(gcs_store, {"a": b"a", "b": b"b"})
    azure_store.put("extra", b"x")

    report = sync(gcs_store, azure_store, dry_run=True, delete=True)

    assert report.dry_run and report.objects_planned == 2 and report.objects_copied == 0
    assert [p.key for p in report.planned_copies] == ["a", "b"]
    assert report.planned_deletes == ["extra"]
    assert [i.key for i in azure_store.list()] == ["extra"]


# -- verify and the manifest digest --------------------------------------------------


def _rewrite_blob(azurite, container: str, key: str, data: bytes, *, keep_metadata: bool) -> None:
    """Overwrite a blob the way another tool would (the service computes a new Content-MD5)."""
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        blob = service.get_blob_client(container, key)
        props = blob.get_blob_properties()
        blob.upload_blob(data, overwrite=True, metadata=props.metadata if keep_metadata else None,
                         content_settings=ContentSettings(content_type=props.content_settings.content_type))


def _alter_keeping_content_md5(azurite, container: str, key: str) -> None:
    """Change a blob's bytes (same size) but keep its metadata and stored Content-MD5: listings cannot tell.

    Put Block + Put Block List: the service stores the x-ms-blob-content-md5
    given at commit without checking it against the blocks.
    """
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        blob = service.get_blob_client(container, key)
        props = blob.get_blob_properties()
        data = bytearray(blob.download_blob().readall())
        data[0] ^= 0xFF
        block_id = base64.b64encode(b"tamper-0001").decode()
        blob.stage_block(block_id, bytes(data))
        blob.commit_block_list([block_id], metadata=props.metadata, content_settings=ContentSettings(
            content_type=props.content_settings.content_type, content_md5=props.content_settings.content_md5))


def test_verify_passes_after_sync_and_reports_extra_objects_without_failing(gcs_store, azure_store):
    seed(gcs_store, AWKWARD)
    sync(gcs_store, azure_store)
    azure_store.put("written-on-azure.txt", b"new")

    report = verify(gcs_store, azure_store)

    assert report.verified and report.objects_matched == len(AWKWARD)
    assert report.objects_extra == 1


def test_verify_reports_a_blob_altered_behind_the_engines_back(gcs_store, azure_store, azurite, azure_container):
    seed(gcs_store, {"a.txt": b"original", "b.txt": b"untouched"})
    sync(gcs_store, azure_store)
    _rewrite_blob(azurite, azure_container, "a.txt", b"ORIGINAL", keep_metadata=True)

    report = verify(gcs_store, azure_store)

    assert not report.verified
    assert [(p.key, p.reason) for p in report.mismatches] == [
        ("a.txt", "target bytes altered after the copy (its MD5 differs from the source's)")]
    assert sync(gcs_store, azure_store).objects_copied == 1, "the next sync repairs it"
    assert azure_store.get("a.txt") == b"original"


def test_verify_reports_a_blob_rewritten_without_provenance(gcs_store, azure_store, azurite, azure_container):
    seed(gcs_store, {"a.txt": b"same bytes"})
    sync(gcs_store, azure_store)
    _rewrite_blob(azurite, azure_container, "a.txt", b"same bytes", keep_metadata=False)

    report = verify(gcs_store, azure_store)

    assert [p.key for p in report.mismatches] == ["a.txt"]
    assert "no spotshift provenance" in report.mismatches[0].reason


def test_deep_verify_catches_altered_bytes_that_listings_cannot_see(gcs_store, azure_store, azurite,
                                                                     azure_container):
    seed(gcs_store, {"a.bin": b"\x00" * 4096, "b.bin": b"\x01" * 4096})
    sync(gcs_store, azure_store)
    _alter_keeping_content_md5(azurite, azure_container, "a.bin")

    shallow = verify(gcs_store, azure_store)
    deep = verify(gcs_store, azure_store, deep=True)
    strict = sync(gcs_store, azure_store, strict=True)

    assert shallow.verified, "listings alone cannot see this alteration"
    assert not deep.verified and [p.key for p in deep.mismatches] == ["a.bin"]
    assert "deep check" in deep.mismatches[0].reason and deep.objects_matched == 1
    assert strict.objects_copied == 0 and strict.verified is False


def test_manifest_digests_match_after_sync_and_differ_after_tampering(gcs_store, azure_store, azurite,
                                                                      azure_container):
    seed(gcs_store, AWKWARD)
    sync(gcs_store, azure_store)
    before = manifest_digest(azure_store)

    assert manifest_digest(gcs_store) == before
    _rewrite_blob(azurite, azure_container, "plain.txt", b"HELLO WORLD\n", keep_metadata=True)
    assert manifest_digest(azure_store) != before
    assert manifest_digest(azure_store, exclude=["plain.txt"]) == manifest_digest(gcs_store, exclude=["plain.txt"])
