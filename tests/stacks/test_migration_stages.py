"""azure-target's migration stages under mocks: provision → sync → cutover, read from the gcp-source stack."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from stacks import azure_target
from stacks._config import ConfigError
from tests.infra.pulumi_mocks import MANIFEST_DIGEST
from tests.stacks.conftest import AZURE_CONFIG, resolved

SOURCE_STACK = "acme/spotshift/gcp-source"
SOURCE_OUTPUTS = {"bucket_name": "spotshift-state-4f2a", "project": "acme-prod", "frozen": False,
                  "freeze_marker": "spotshift-freeze/marker.json"}
STACK_REFERENCE = "pulumi:pulumi:StackReference"
COMPONENT = "spotshift:migration:ObjectMigration"
DYNAMIC = "pulumi-python:dynamic/spotshift:MigrationRun"
ROLE = "azure-native:authorization:RoleAssignment"
CONTAINER = "azure-native:storage:BlobContainer"


def deploy_stage(mocks, configure, stage: str, frozen: Any = False, **overrides: Any) -> dict[str, Any]:
    """Run azure-target at ``stage`` against a source stack exporting ``frozen``; return the resolved exports."""
    mocks.stack_outputs[SOURCE_STACK] = {**SOURCE_OUTPUTS, "frozen": frozen}
    configure(AZURE_CONFIG, migrationStage=stage, sourceStack=SOURCE_STACK, storageAllowedCidrs=["203.0.113.7"],
              **overrides)
    values: dict[str, Any] = {}

    @pulumi.runtime.test
    def deploy():
        return resolved(azure_target.main()).apply(values.update)

    deploy()
    return values


def names_of(urns: set[str], typ: str) -> set[str]:
    """Names of the resources of ``typ`` among ``urns`` (a URN ends with ``...$<type>::<name>``)."""
    found = set()
    for urn in urns:
        qualified, _, name = urn.rpartition("::")
        if qualified.split("$")[-1].split("::")[-1] == typ:
            found.add(name)
    return found


def test_provision_stage_has_no_migration_and_reads_no_source_stack(mocks, configure):
    configure(AZURE_CONFIG)

    @pulumi.runtime.test
    def deploy():
        return resolved(azure_target.main())

    deploy()

    assert mocks.of_type(STACK_REFERENCE) == []
    assert mocks.of_type(COMPONENT) == [] and mocks.of_type(DYNAMIC) == []


def test_sync_stage_copies_from_the_source_stacks_bucket_into_this_stacks_container(mocks, configure):
    values = deploy_stage(mocks, configure, "sync", syncRound=3)

    assert mocks.one(STACK_REFERENCE).inputs["name"] == SOURCE_STACK
    assert len(mocks.of_type(COMPONENT)) == 1
    run = mocks.one(DYNAMIC).inputs
    assert run["source_bucket"] == "spotshift-state-4f2a", "the bucket comes from the StackReference"
    assert run["gcs_project"] == "acme-prod"
    account = values["storage_account_name"]
    assert run["target_account_url"] == f"https://{account}.blob.core.windows.net"
    assert run["target_container"] == values["container_name"] == "spotshift"
    assert run["sync_round"] == 3 and run["strict"] is False
    assert run["exclude"] == ["leases/*"], "lease objects stay behind"
    assert "__provider" in run, "the provider was serialized with the program"
    assert not any(key in run for key in ("azure_connection_string", "gcs_credentials_json")), (
        "the stack migrates with the operator's ambient identities, no credential inputs"
    )
    assert values["migration_stage"] == "sync" and values["sync_round"] == 3
    assert values["source_bucket"] == "spotshift-state-4f2a"
    assert {"migration_objects_copied", "migration_verified", "manifest_digest"} <= set(values)
    assert "cutover_ready" not in values


def test_the_copy_waits_for_the_container_and_both_blob_data_grants(mocks, configure):
    deploy_stage(mocks, configure, "sync")

    dependencies = set(mocks.one(DYNAMIC).options["dependencies"])

    assert names_of(dependencies, ROLE) == {r.name for r in mocks.of_type(ROLE)} == {
        "spotshift-storage-workload-blob-data",
        "spotshift-storage-deployer-blob-data",
    }
    assert names_of(dependencies, CONTAINER) == {mocks.one(CONTAINER).name}


def test_a_sync_round_bump_reaches_the_migration_input(mocks, configure):
    deploy_stage(mocks, configure, "sync", syncRound=7)

    assert mocks.one(DYNAMIC).inputs["sync_round"] == 7


@pytest.mark.parametrize("frozen", [False, "false", None])
def test_cutover_is_refused_while_the_source_stack_is_not_frozen(mocks, configure, frozen, expected_config_errors):
    with pytest.raises(ConfigError, match=r"cutover but the source stack acme/spotshift/gcp-source is not frozen"):
        deploy_stage(mocks, configure, "cutover", frozen=frozen)

    assert mocks.of_type(DYNAMIC) == [], "nothing may be copied before the freeze"


def test_cutover_runs_strict_and_exports_the_azure_api_url(mocks, configure):
    values = deploy_stage(mocks, configure, "cutover", frozen=True, syncRound=4)

    run = mocks.one(DYNAMIC).inputs
    assert run["strict"] is True and run["sync_round"] == 4
    assert run["source_bucket"] == "spotshift-state-4f2a"
    assert values["cutover_api_url"] == values["api_url"]
    assert values["cutover_ready"] is True and values["migration_verified"] is True
    assert values["manifest_digest"] == MANIFEST_DIGEST and values["migration_stage"] == "cutover"
