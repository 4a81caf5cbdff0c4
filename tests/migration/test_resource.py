"""The ObjectMigration dynamic provider, called directly against fake-gcs-server and Azurite.

Pulumi mocks never run a dynamic provider's CRUD methods, so these tests call
them the way the Pulumi engine would, after the same dill round trip the
Python SDK applies to the provider when it stores it in the state.
"""

from __future__ import annotations

import base64

import dill
import pytest
from azure.storage.blob import BlobServiceClient
from pulumi.dynamic.dynamic import serialize_provider

from app.storage.emulators import silently_alter_blob
from migration import copier
from migration.resource import DEFAULT_EXCLUDE, MigrationError, MigrationProvider

OBJECTS = {
    "jobs/0001.json": b'{"status": "done"}',
    "uploads/0001/cat photo.png": b"\x89PNG fake image bytes" * 50,
    "results/0001.png": b"grayscale" * 300,
    "queue/0002": b"",
    "deep/a/b/c/d/über #1 50%.txt": "unicode ✓".encode(),
}


@pytest.fixture
def seeded_source(gcs_store):
    """A source bucket with a few objects and one lease that must not travel."""
    for key, data in OBJECTS.items():
        gcs_store.put(key, data, content_type="application/octet-stream", metadata={"origin": "test"})
    gcs_store.put("leases/0002", b'{"worker": "gcp-1"}', content_type="application/json")
    return gcs_store


def props_for(fake_gcs, bucket: str, azurite, container: str, **overrides):
    """Provider inputs as the Pulumi engine passes them: plain values, secrets already decrypted."""
    props = {
        "source_bucket": bucket,
        "source_prefix": "",
        "gcs_project": fake_gcs.project,
        "target_account_url": None,
        "target_container": container,
        "target_prefix": "",
        "include": [],
        "exclude": list(DEFAULT_EXCLUDE),
        "sync_round": 1,
        "strict": False,
        "workers": 8,
        "azure_connection_string": azurite.connection_string,
    }
    props.update(overrides)
    return props


def round_tripped() -> MigrationProvider:
    """The provider as the Pulumi engine gets it back: serialized by the SDK, then unpickled."""
    return dill.loads(base64.b64decode(serialize_provider(MigrationProvider())))


def silently_alter(azurite, container: str, key: str) -> None:
    """Change a blob's bytes but keep its size, metadata and Content-MD5 (listings cannot tell)."""
    before = azurite_props(azurite, container, key)

    silently_alter_blob(azurite.connection_string, container, key)

    after = azurite_props(azurite, container, key)
    assert after.size == before.size and after.content_settings.content_md5 == before.content_settings.content_md5


def azurite_props(azurite, container: str, key: str):
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        return service.get_blob_client(container, key).get_blob_properties()


def test_provider_survives_the_sdk_serialization_round_trip(seeded_source, fake_gcs, gcs_bucket, azurite,
                                                            azure_container, azure_store):
    provider = round_tripped()

    result = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))

    assert result.outs["objects_copied"] == len(OBJECTS), result.outs
    assert sorted(i.key for i in azure_store.list()) == sorted(OBJECTS)


def test_create_copies_everything_except_leases_with_counts_and_digest(seeded_source, fake_gcs, gcs_bucket,
                                                                       azurite, azure_container, azure_store):
    provider = MigrationProvider()

    result = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))

    outs = result.outs
    assert outs["objects_copied"] == len(OBJECTS)
    assert outs["bytes_copied"] == sum(len(v) for v in OBJECTS.values())
    assert outs["objects_failed"] == 0
    assert outs["verified"] is True
    assert not azure_store.exists("leases/0002"), "lease objects must not be migrated"
    assert outs["manifest_digest"] == copier.manifest_digest(seeded_source, "", exclude=list(DEFAULT_EXCLUDE))
    assert result.id.startswith("migration-")
    assert azure_store.get("deep/a/b/c/d/über #1 50%.txt") == OBJECTS["deep/a/b/c/d/über #1 50%.txt"]


def test_round_bump_after_one_change_copies_only_that_object(seeded_source, fake_gcs, gcs_bucket, azurite,
                                                             azure_container, azure_store):
    provider = MigrationProvider()
    first = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    seeded_source.put("jobs/0001.json", b'{"status": "DONE"}', content_type="application/json")
    news = props_for(fake_gcs, gcs_bucket, azurite, azure_container, sync_round=2)

    diff = provider.diff(first.id, first.outs, news)
    second = provider.update(first.id, first.outs, news)

    assert diff.changes is True and not diff.replaces
    assert second.outs["objects_copied"] == 1, second.outs
    assert second.outs["objects_skipped"] == len(OBJECTS) - 1
    assert azure_store.get("jobs/0001.json") == b'{"status": "DONE"}'
    assert second.outs["manifest_digest"] != first.outs["manifest_digest"]


def test_diff_asks_for_nothing_when_inputs_are_unchanged(fake_gcs, gcs_bucket, azurite, azure_container):
    olds = props_for(fake_gcs, gcs_bucket, azurite, azure_container)

    diff = MigrationProvider().diff("migration-x", olds, dict(olds))

    assert diff.changes is False


@pytest.mark.parametrize("key,value", [("target_container", "other"), ("exclude", ["tmp/*"]),
                                       ("include", ["results/*"]), ("strict", True), ("source_bucket", "b2")])
def test_diff_asks_for_a_new_round_when_locations_or_filters_change(fake_gcs, gcs_bucket, azurite,
                                                                    azure_container, key, value):
    olds = props_for(fake_gcs, gcs_bucket, azurite, azure_container)

    diff = MigrationProvider().diff("migration-x", olds, {**olds, key: value})

    assert diff.changes is True and not diff.replaces


def test_diff_sees_a_connection_string_for_another_account(fake_gcs, gcs_bucket, azurite, azure_container):
    olds = props_for(fake_gcs, gcs_bucket, azurite, azure_container,
                     azure_connection_string="AccountName=staging;AccountKey=a2V5;EndpointSuffix=core.windows.net")
    news = {**olds, "azure_connection_string": "AccountName=prod;AccountKey=a2V5;EndpointSuffix=core.windows.net"}
    rotated = {**olds, "azure_connection_string": "AccountName=staging;AccountKey=bmV3;EndpointSuffix=core.windows.net"}

    provider = MigrationProvider()

    assert provider.diff("migration-x", olds, news).changes is True
    assert provider.diff("migration-x", olds, rotated).changes is False, "a rotated key is not a new round"


@pytest.mark.parametrize(("key", "old", "new"), [("target_prefix", "dst", "dst/"), ("source_prefix", "", None),
                                                  ("target_account_url", None, "")])
def test_diff_ignores_spellings_of_the_same_location(fake_gcs, gcs_bucket, azurite, azure_container, key, old, new):
    olds = props_for(fake_gcs, gcs_bucket, azurite, azure_container, **{key: old})

    diff = MigrationProvider().diff("migration-x", olds, {**olds, key: new})

    assert diff.changes is False


def test_strict_round_fails_when_a_target_object_was_silently_altered(seeded_source, fake_gcs, gcs_bucket,
                                                                      azurite, azure_container):
    provider = MigrationProvider()
    first = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    silently_alter(azurite, azure_container, "results/0001.png")

    with pytest.raises(MigrationError) as failure:
        provider.update(first.id, first.outs,
                        props_for(fake_gcs, gcs_bucket, azurite, azure_container, sync_round=2, strict=True))

    message = str(failure.value)
    assert "results/0001.png" in message
    assert f"gs://{gcs_bucket}" in message and f"az://{azure_container}" in message
    assert "AccountKey" not in message


def test_non_strict_round_repairs_nothing_it_cannot_see_but_strict_round_after_recopy_passes(
        seeded_source, fake_gcs, gcs_bucket, azurite, azure_container, azure_store):
    provider = MigrationProvider()
    first = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    azure_store.delete("results/0001.png")

    second = provider.update(first.id, first.outs,
                             props_for(fake_gcs, gcs_bucket, azurite, azure_container, sync_round=2, strict=True))

    assert second.outs["objects_copied"] == 1
    assert second.outs["verified"] is True
    assert azure_store.get("results/0001.png") == OBJECTS["results/0001.png"]


def test_delete_forgets_the_resource_and_leaves_the_data(seeded_source, fake_gcs, gcs_bucket, azurite,
                                                         azure_container, azure_store):
    provider = MigrationProvider()
    created = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))

    provider.delete(created.id, created.outs)

    assert sorted(i.key for i in azure_store.list()) == sorted(OBJECTS)


def test_read_reports_state_without_copying(seeded_source, fake_gcs, gcs_bucket, azurite, azure_container,
                                            azure_store):
    provider = MigrationProvider()
    created = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    seeded_source.put("jobs/0003.json", b"{}", content_type="application/json")

    read = provider.read(created.id, created.outs)

    assert read.outs["verified"] is False
    assert any("jobs/0003.json" in f for f in read.outs["failures"])
    assert not azure_store.exists("jobs/0003.json"), "read must not copy"
    assert read.outs["manifest_digest"] == created.outs["manifest_digest"]


def test_missing_source_bucket_fails_with_a_message_naming_both_sides(fake_gcs, azurite, azure_container):
    provider = MigrationProvider()

    with pytest.raises(MigrationError) as failure:
        provider.create(props_for(fake_gcs, "no-such-bucket", azurite, azure_container))

    assert "gs://no-such-bucket" in str(failure.value)
    assert f"az://{azure_container}" in str(failure.value)
