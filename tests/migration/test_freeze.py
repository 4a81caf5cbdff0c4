"""The cutover's late-write refusal: on the emulators through the provider, and the check's own edge cases."""

from __future__ import annotations

import os

import pytest

from infra.gcp.freeze import FREEZE_MARKER_KEY
from migration.freeze import LateWriteError, check_no_writes_after_freeze
from migration.resource import MigrationError, MigrationProvider
from tests.migration.test_resource import OBJECTS, props_for


@pytest.fixture
def frozen_source(gcs_store):
    """A source bucket seeded before the freeze, then the freeze marker written last."""
    for key, data in OBJECTS.items():
        gcs_store.put(key, data, content_type="application/octet-stream")
    gcs_store.put_json(FREEZE_MARKER_KEY, {"frozen": True, "stack": "gcp-source"})
    return gcs_store


def test_strict_round_passes_when_nothing_was_written_after_the_freeze_marker(
        frozen_source, fake_gcs, gcs_bucket, azurite, azure_container, azure_store):
    provider = MigrationProvider()

    result = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container, strict=True,
                                       freeze_marker=FREEZE_MARKER_KEY))

    assert result.outs["verified"] is True
    assert {info.key for info in azure_store.list()} >= set(OBJECTS)


def test_write_after_the_freeze_marker_makes_the_strict_round_fail_naming_count_and_keys(
        frozen_source, fake_gcs, gcs_bucket, azurite, azure_container):
    frozen_source.put("results/late-1.png", b"written by a worker that was still running")
    frozen_source.put("jobs/late-2.json", b'{"status": "done"}')
    provider = MigrationProvider()

    with pytest.raises(MigrationError) as refused:
        provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container, strict=True,
                                  freeze_marker=FREEZE_MARKER_KEY))

    message = str(refused.value)
    assert message.startswith("cutover refused: 2 object(s) in gs://")
    assert "written at or after the freeze" in message
    assert "jobs/late-2.json" in message and "results/late-1.png" in message
    assert gcs_bucket in message and azure_container in message


def test_round_without_a_freeze_marker_input_does_not_check_write_times(
        frozen_source, fake_gcs, gcs_bucket, azurite, azure_container):
    frozen_source.put("results/late-1.png", b"sync rounds run while GCP still serves")
    provider = MigrationProvider()

    result = provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container, strict=True))

    assert result.outs["verified"] is True


@pytest.fixture
def seeded_source_without_marker(gcs_store):
    """A source bucket that says nothing about a freeze."""
    gcs_store.put("jobs/0001.json", b"{}")
    return gcs_store


def test_missing_freeze_marker_refuses_the_cutover(seeded_source_without_marker, fake_gcs, gcs_bucket, azurite,
                                                  azure_container):
    provider = MigrationProvider()

    with pytest.raises(MigrationError, match="cutover refused: the freeze marker .* does not exist"):
        provider.create(props_for(fake_gcs, gcs_bucket, azurite, azure_container, strict=True,
                                  freeze_marker=FREEZE_MARKER_KEY))


def test_refusal_names_a_few_keys_and_counts_the_rest(local_store):
    local_store.put_json(FREEZE_MARKER_KEY, {"frozen": True})
    late = [f"results/{index:03d}.png" for index in range(8)]
    for key in late:
        local_store.put(key, b"late")
    marker = local_store.head(FREEZE_MARKER_KEY)
    # LocalStore's update time is the file's mtime: push the marker back so the order is certain.
    earlier = marker.updated.timestamp() - 60
    os.utime(local_store.root / FREEZE_MARKER_KEY, (earlier, earlier))

    with pytest.raises(LateWriteError) as refused:
        check_no_writes_after_freeze(local_store, FREEZE_MARKER_KEY)

    message = str(refused.value)
    assert "8 object(s)" in message
    assert ", ".join(late[:5]) in message and "(+3 more)" in message
    assert late[5] not in message


def test_check_looks_only_under_the_migrated_prefix(local_store):
    local_store.put("other/late.txt", b"not part of this migration")
    local_store.put_json(FREEZE_MARKER_KEY, {"frozen": True})
    local_store.put("other/later.txt", b"still not part of it")
    marker = local_store.head(FREEZE_MARKER_KEY)

    frozen_at = check_no_writes_after_freeze(local_store, FREEZE_MARKER_KEY, prefix="data/")

    assert frozen_at == marker.updated
    with pytest.raises(LateWriteError, match="other/later.txt"):
        check_no_writes_after_freeze(local_store, FREEZE_MARKER_KEY, prefix="other/")
