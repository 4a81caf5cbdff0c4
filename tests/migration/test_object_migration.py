"""The ObjectMigration component under Pulumi mocks: its child, secret credentials, registered outputs."""

from __future__ import annotations

import pulumi
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

from migration.resource import ObjectMigration, ObjectMigrationArgs
from tests.infra.pulumi_mocks import settled

COMPONENT = "spotshift:migration:ObjectMigration"
RUN = "pulumi-python:dynamic/spotshift:MigrationRun"
CONNECTION_STRING = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bm90LWEtcmVhbC1rZXk=;"
# A fake service-account key; the PEM header is split so secret scanners do not take it for one.
KEY_JSON = '{"type": "service_account", "private_key": "-----BEGIN ' + 'PRIVATE KEY-----\\nMIIB\\n"}'


def migration(**overrides) -> ObjectMigration:
    args = {"source_bucket": "src-bucket", "target_container": "spotshift",
            "target_account_url": "https://acct.blob.core.windows.net"}
    args.update(overrides)
    return ObjectMigration("move", ObjectMigrationArgs(**args))


@pulumi.runtime.test
def test_one_copy_resource_is_parented_to_the_component_with_its_inputs(mocks):
    migration(sync_round=2)

    def check(_):
        component = mocks.one(COMPONENT)
        run = mocks.one(RUN)
        assert run.name == "move-copy"
        assert run.options["parent"].endswith(f"{COMPONENT}::move")
        assert run.inputs["source_bucket"] == "src-bucket" and run.inputs["sync_round"] == 2
        assert run.inputs["exclude"] == ["leases/*"] and run.inputs["strict"] is False
        assert component.name == "move"

    return settled().apply(check)


@pulumi.runtime.test
def test_credentials_passed_to_it_are_secret_in_inputs_and_outputs(mocks):
    migration(azure_connection_string=CONNECTION_STRING, gcs_credentials_json=KEY_JSON)

    def check(_):
        run = mocks.one(RUN)
        for key, value in (("azure_connection_string", CONNECTION_STRING), ("gcs_credentials_json", KEY_JSON)):
            assert is_rpc_secret(run.inputs[key]), f"{key} must reach the state as a Pulumi secret"
            assert unwrap_rpc_secret(run.inputs[key]) == value
        assert set(run.options["additionalSecretOutputs"]) == {"azure_connection_string", "gcs_credentials_json"}
        plain = {key: value for key, value in run.inputs.items() if key not in ("azure_connection_string",
                                                                              "gcs_credentials_json")}
        assert "AccountKey" not in repr(plain) and "PRIVATE" + " KEY" not in repr(plain)

    return settled().apply(check)


@pulumi.runtime.test
def test_an_account_url_with_a_sas_is_secret_and_a_plain_one_is_not(mocks):
    ObjectMigration("plain", ObjectMigrationArgs(source_bucket="b", target_container="c",
                                                 target_account_url="https://acct.blob.core.windows.net"))
    ObjectMigration("sas", ObjectMigrationArgs(source_bucket="b", target_container="c",
                                               target_account_url="https://acct.blob.core.windows.net?sv=1&sig=s3cr3t"))

    def check(_):
        plain = mocks.one(RUN, lambda r: r.name == "plain-copy").inputs["target_account_url"]
        sas = mocks.one(RUN, lambda r: r.name == "sas-copy").inputs["target_account_url"]
        assert plain == "https://acct.blob.core.windows.net"
        assert is_rpc_secret(sas) and "sig=s3cr3t" in unwrap_rpc_secret(sas)

    return settled().apply(check)


@pulumi.runtime.test
def test_without_credentials_no_credential_input_exists(mocks):
    migration()

    def check(_):
        inputs = mocks.one(RUN).inputs
        assert "azure_connection_string" not in inputs and "gcs_credentials_json" not in inputs

    return settled().apply(check)


def test_the_component_registers_its_outputs(mocks):
    @pulumi.runtime.test
    def deploy():
        migration()
        return settled()

    deploy()

    (outputs,) = [outs for urn, outs in mocks.component_outputs.items() if urn.endswith(f"{COMPONENT}::move")]
    # The mocks' round returns no completed_at (a real round does), and an unknown output is not registered.
    assert set(outputs) - {"completed_at"} == {"objects_copied", "bytes_copied", "objects_skipped", "bytes_skipped",
                                               "objects_failed", "verified", "manifest_digest"}


def capture_copy_resource(into: list):
    """A transformation (children inherit it) that keeps the copy resource and its options."""

    def capture(args: pulumi.ResourceTransformationArgs):
        if args.type_ == RUN:
            into.append(args)
        return None

    return capture


@pulumi.runtime.test
def test_the_deadline_reaches_the_copy_with_custom_timeouts_that_outlast_it(mocks):
    seen: list = []
    ObjectMigration("move", ObjectMigrationArgs(source_bucket="b", target_container="c", deadline_minutes=90),
                    pulumi.ResourceOptions(transformations=[capture_copy_resource(seen)]))

    def check(_):
        run = mocks.one(RUN).inputs
        assert run["deadline_seconds"] == 90 * 60
        (args,) = seen
        assert args.opts.custom_timeouts.create == "100m" and args.opts.custom_timeouts.update == "100m"

    return settled().apply(check)


@pulumi.runtime.test
def test_custom_timeouts_given_to_the_component_are_passed_down_to_the_copy(mocks):
    seen: list = []
    ObjectMigration("move", ObjectMigrationArgs(source_bucket="b", target_container="c"),
                    pulumi.ResourceOptions(transformations=[capture_copy_resource(seen)],
                                           custom_timeouts=pulumi.CustomTimeouts(create="7h", update="7h")))

    def check(_):
        (args,) = seen
        assert args.opts.custom_timeouts.create == "7h" and args.opts.custom_timeouts.update == "7h"

    return settled().apply(check)


@pulumi.runtime.test
def test_progress_is_addressed_to_the_copy_resources_own_urn(mocks):
    seen: list = []
    migration_with_capture = ObjectMigration(
        "move", ObjectMigrationArgs(source_bucket="b", target_container="c"),
        pulumi.ResourceOptions(transformations=[capture_copy_resource(seen)]))

    def check(values):
        urn, recorded = values
        assert recorded == urn and urn.endswith(f"{COMPONENT}${RUN}::move-copy")

    assert migration_with_capture is not None
    return settled().apply(lambda _: pulumi.Output.all(seen[0].resource.urn, mocks.one(RUN).inputs["resource_urn"])
                           ).apply(check)
