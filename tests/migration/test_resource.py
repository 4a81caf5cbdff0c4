"""The ObjectMigration dynamic provider, called directly against fake-gcs-server and Azurite.

Pulumi mocks never run a dynamic provider's CRUD methods, so these tests call
them the way the Pulumi engine would, after the same dill round trip the
Python SDK applies to the provider when it stores it in the state.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import dill
import pytest
from azure.storage.blob import BlobServiceClient
from pulumi.dynamic.dynamic import serialize_provider

from app.storage.emulators import silently_alter_blob
from migration import copier
from migration.resource import DEFAULT_EXCLUDE, MigrationError, MigrationProvider
from tests.migration.stalling_proxy import StallingProxy

FIXTURE = Path(__file__).parent / "fixtures" / "provider-89e56b5.txt"

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

    assert MigrationProvider().diff("migration-x", olds, news).changes is True


def test_a_rotated_connection_string_is_stored_without_a_copy_round(seeded_source, fake_gcs, gcs_bucket, azurite,
                                                                    azure_container, azure_store):
    provider = MigrationProvider()
    created = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    seeded_source.put("jobs/0009.json", b"{}", content_type="application/json")  # would be copied by a round
    # Same account, new credential (Azurite accepts the same key under another spelling of the string).
    rotated_string = azurite.connection_string.replace("DefaultEndpointsProtocol=http;", "") + ";"
    news = props_for(fake_gcs, gcs_bucket, azurite, azure_container, azure_connection_string=rotated_string)

    diff = provider.diff(created.id, created.outs, news)
    updated = provider.update(created.id, created.outs, news)

    assert diff.changes is True and not diff.replaces
    assert updated.outs["azure_connection_string"] == rotated_string, "the new credential is what state keeps"
    assert updated.outs["objects_copied"] == created.outs["objects_copied"], "results of the last round are kept"
    assert updated.outs["manifest_digest"] == created.outs["manifest_digest"]
    assert not azure_store.exists("jobs/0009.json"), "a credential change must not run a copy round"


def test_a_new_sas_for_the_same_account_is_a_stored_change_not_a_round(fake_gcs, gcs_bucket, azurite,
                                                                       azure_container):
    olds = {**props_for(fake_gcs, gcs_bucket, azurite, azure_container, azure_connection_string=None),
            "target_account_url": "https://acct.blob.core.windows.net?sv=2024&sig=old", "objects_copied": 3,
            "manifest_digest": "d1", "verified": True}
    news = {**props_for(fake_gcs, gcs_bucket, azurite, azure_container, azure_connection_string=None),
            "target_account_url": "https://acct.blob.core.windows.net?sv=2024&sig=new"}
    provider = MigrationProvider()

    diff = provider.diff("migration-x", olds, news)
    updated = provider.update("migration-x", olds, news)  # acct.blob.core.windows.net is never contacted

    assert diff.changes is True and not diff.replaces
    assert updated.outs["target_account_url"].endswith("sig=new")
    assert updated.outs["objects_copied"] == 3 and updated.outs["manifest_digest"] == "d1"


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


def test_read_returns_the_recorded_state_without_touching_either_cloud(seeded_source, fake_gcs, gcs_bucket,
                                                                        azurite, azure_container):
    provider = MigrationProvider()
    created = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))
    # Both sides "stopped": nothing listens on these ports any more.
    gone = {**created.outs, "source_bucket": "gone-bucket",
            "azure_connection_string": azurite.connection_string.replace(str(azurite.port), str(closed_port()))}

    read = provider.read(created.id, gone)

    assert read.id == created.id
    assert read.outs == gone, "refresh keeps the last known state as recorded"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_provider_string_recorded_from_release_0_1_0_still_unpickles_and_deletes(
        seeded_source, fake_gcs, gcs_bucket, azurite, azure_container, azure_store):
    from migration.provider import MigrationProvider as Stable

    recorded = [line for line in FIXTURE.read_text().splitlines() if line and not line.startswith("#")][0]
    created = MigrationProvider().create(props_for(fake_gcs, gcs_bucket, azurite, azure_container))

    provider = dill.loads(base64.b64decode(recorded))
    provider.delete(created.id, created.outs)

    assert type(provider) is Stable
    assert sorted(i.key for i in azure_store.list()) == sorted(OBJECTS), "delete leaves every blob"


def test_new_stacks_pickle_the_provider_under_its_stable_name():
    pickled = base64.b64decode(serialize_provider(MigrationProvider()))

    assert b"migration.provider" in pickled and b"MigrationProvider" in pickled
    assert b"migration.resource" not in pickled


def test_missing_source_bucket_fails_with_a_message_naming_both_sides(fake_gcs, azurite, azure_container):
    provider = MigrationProvider()

    with pytest.raises(MigrationError) as failure:
        provider.create(props_for(fake_gcs, "no-such-bucket", azurite, azure_container))

    assert "gs://no-such-bucket" in str(failure.value)
    assert f"az://{azure_container}" in str(failure.value)
    key = [part for part in azurite.connection_string.split(";") if part.startswith("AccountKey=")][0]
    assert key.split("=", 1)[1] not in str(failure.value), "no credential in an error message"


def test_a_round_that_reaches_its_deadline_stops_reports_and_the_next_round_resumes(
        seeded_source, fake_gcs, gcs_bucket, azurite, azure_container, azure_store, monkeypatch):
    stalls = lambda method, path: method == "GET" and "/download/" in path and "uploads%2F0001" in path  # noqa: E731
    props = props_for(fake_gcs, gcs_bucket, azurite, azure_container, workers=1, deadline_seconds=3)
    provider = MigrationProvider()

    with StallingProxy(fake_gcs.url, stalls) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        with pytest.raises(MigrationError) as failure:
            provider.create(props)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)

    message = str(failure.value)
    assert proxy.stalled, "the source stalled on the object's download"
    # One worker copies in key order as the plan streams: every key before the stalled uploads/... lands.
    assert "4 of 5 planned objects" in message, message
    assert "Run `pulumi up` again" in message and "deadline" in message
    assert sorted(i.key for i in azure_store.list()) == sorted(set(OBJECTS) - {"uploads/0001/cat photo.png"})

    resumed = provider.create({**props, "deadline_seconds": 120})

    assert resumed.outs["objects_copied"] == 1 and resumed.outs["objects_skipped"] == 4, resumed.outs
    assert resumed.outs["verified"] is True


def test_the_copy_process_ends_when_the_provider_process_goes_away(fake_gcs, gcs_bucket, azurite, azure_container,
                                                                  monkeypatch):
    import json
    import subprocess
    import sys

    props = props_for(fake_gcs, gcs_bucket, azurite, azure_container)
    with StallingProxy(fake_gcs.url, lambda method, path: True) as proxy:  # the listing never answers
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        child = subprocess.Popen([sys.executable, "-m", "migration.provider_round"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        child.stdin.write(json.dumps(props) + "\n")
        child.stdin.flush()
        while not proxy.stalled and child.poll() is None:  # wait until it is stuck in the listing
            time.sleep(0.05)
        assert proxy.stalled, "the copy process reached the source"

        child.stdin.close()  # what the provider process's exit does to the pipe
        code = child.wait(timeout=60)

    assert code == 4, "the orphaned copy process exits instead of copying on"


def test_a_new_deadline_is_stored_without_a_copy_round(fake_gcs, gcs_bucket, azurite, azure_container):
    olds = {**props_for(fake_gcs, gcs_bucket, azurite, azure_container, deadline_seconds=3600),
            "objects_copied": 7, "manifest_digest": "d7", "verified": True}
    news = props_for(fake_gcs, gcs_bucket, azurite, azure_container, deadline_seconds=7200)
    provider = MigrationProvider()

    diff = provider.diff("migration-x", olds, news)
    updated = provider.update("migration-x", olds, news)

    assert diff.changes is True
    assert updated.outs["deadline_seconds"] == 7200
    assert updated.outs["objects_copied"] == 7 and updated.outs["manifest_digest"] == "d7"


def sas_url(azurite, minutes: int) -> str:
    """The Azurite account URL with a fresh account SAS (a real credential the emulator checks)."""
    import datetime

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    from app.storage.emulators import AZURITE_ACCOUNT, AZURITE_KEY

    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    token = generate_account_sas(AZURITE_ACCOUNT, AZURITE_KEY, ResourceTypes(service=True, container=True, object=True),
                                 AccountSasPermissions(read=True, write=True, list=True, create=True, add=True),
                                 expiry=expiry)
    return f"{azurite.blob_endpoint}?{token}"


def test_a_new_sas_for_the_same_account_updates_the_stored_url_and_stays_out_of_plain_outputs(
        seeded_source, fake_gcs, gcs_bucket, azurite, azure_container, azure_store):
    first_url, second_url = sas_url(azurite, 60), sas_url(azurite, 120)
    provider = MigrationProvider()
    created = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container, azure_connection_string=None,
                                        target_account_url=first_url))
    seeded_source.put("jobs/0010.json", b"{}", content_type="application/json")  # a round would copy this
    news = props_for(fake_gcs, gcs_bucket, azurite, azure_container, azure_connection_string=None,
                     target_account_url=second_url)

    diff = provider.diff(created.id, created.outs, news)
    updated = provider.update(created.id, created.outs, news)

    assert created.outs["objects_copied"] == len(OBJECTS), "the SAS works against Azurite"
    assert diff.changes is True and not diff.replaces
    assert updated.outs["target_account_url"] == second_url
    assert not azure_store.exists("jobs/0010.json"), "no copy round for a new SAS"
    signature = second_url.split("sig=", 1)[1].split("&", 1)[0]
    for outs in (created.outs, updated.outs):
        plain = {key: value for key, value in outs.items()
                 if key not in ("target_account_url", "azure_connection_string")}
        assert "sig=" not in repr(plain) and signature not in repr(plain), "a SAS only under its secret key"
    assert "sig" not in created.id
