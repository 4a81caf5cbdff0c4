"""The gcp-source program under mocks: resources, exports, freeze and config validation."""

from __future__ import annotations

from collections import Counter

import pulumi
import pytest
import yaml

from stacks import gcp_source
from stacks._config import ConfigError
from infra.gcp import FREEZE_MARKER_KEY
from tests.infra.pulumi_mocks import GCP_API_IP
from tests.stacks.conftest import GCP_CONFIG, resolved

INSTANCE = "gcp:compute/instance:Instance"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
MIG = "gcp:compute/instanceGroupManager:InstanceGroupManager"
FIREWALL = "gcp:compute/firewall:Firewall"

DEFAULT_RESOURCES = Counter(
    {
        "gcp:compute/network:Network": 1,
        "gcp:compute/subnetwork:Subnetwork": 1,
        "gcp:compute/router:Router": 1,
        "gcp:compute/routerNat:RouterNat": 1,
        "gcp:serviceaccount/account:Account": 1,
        "gcp:storage/bucket:Bucket": 1,
        "gcp:storage/bucketIAMMember:BucketIAMMember": 1,
        "gcp:compute/address:Address": 1,
        INSTANCE: 1,
        TEMPLATE: 1,
        MIG: 1,
    }
)
COMPONENTS = Counter(
    {
        "spotshift:gcp:GcpSpotWorkload": 1,
        "spotshift:gcp:GcpNetwork": 1,
        "spotshift:gcp:GcsBucket": 1,
        "spotshift:gcp:GcpSpotApiVm": 1,
        "spotshift:gcp:SpotWorkerGroup": 1,
    }
)
EXPORTS = {
    "bucket_name", "api_url", "api_ip", "frozen", "freeze_marker", "freeze_marker_generation",
    "service_account_email", "project", "worker_group",
}
MARKER = "gcp:storage/bucketObject:BucketObject"


def env(user_data: str) -> dict[str, str]:
    files = {entry["path"]: entry["content"] for entry in yaml.safe_load(user_data)["write_files"]}
    return dict(line.split("=", 1) for line in files["/etc/spotshift/spotshift.env"].splitlines())


@pulumi.runtime.test
def test_default_stack_creates_exactly_these_resources(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        assert mocks.type_counts() == DEFAULT_RESOURCES
        components = Counter(r.type for r in mocks.registrations if r.type.startswith("spotshift:"))
        assert components == COMPONENTS
        assert sum(DEFAULT_RESOURCES.values()) == 11

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_open_api_ssh_and_build_add_only_their_resources(mocks, configure, exports):
    configure(GCP_CONFIG, allowedCidrs=["203.0.113.0/24"], sshSourceCidr="192.0.2.4/32", buildImage=True, image=None)

    outputs = gcp_source.main()

    def check(_):
        assert mocks.type_counts() == DEFAULT_RESOURCES + Counter(
            {
                FIREWALL: 2,
                "gcp:artifactregistry/repository:Repository": 1,
                "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": 1,
                "docker:index/image:Image": 1,
            }
        )

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_stack_exports_the_source_values(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(values):
        assert set(exports) == set(values) == EXPORTS
        bucket = mocks.one("gcp:storage/bucket:Bucket")
        assert values["bucket_name"] == mocks.one("gcp:storage/bucketIAMMember:BucketIAMMember").inputs["bucket"]
        assert values["bucket_name"].startswith(bucket.name)
        assert values["api_ip"] == GCP_API_IP
        assert values["api_url"] == f"http://{GCP_API_IP}:8080"
        assert values["frozen"] is False
        assert values["freeze_marker"] is None and values["freeze_marker_generation"] is None
        assert mocks.of_type(MARKER) == [], "no freeze marker unless frozen"
        assert values["service_account_email"] == "spotshift-test@spotshift-test.iam.gserviceaccount.com"
        assert values["project"] == "spotshift-test"
        assert values["worker_group"].startswith("spotshift-workers-mig")

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_security_and_spot_baseline_of_the_stack(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(values):
        bucket = mocks.one("gcp:storage/bucket:Bucket").inputs
        grant = mocks.one("gcp:storage/bucketIAMMember:BucketIAMMember").inputs
        assert (bucket["uniformBucketLevelAccess"], bucket["publicAccessPrevention"], bucket["forceDestroy"]) == (
            True,
            "enforced",
            False,
        )
        assert (grant["role"], grant["bucket"], grant["member"]) == (
            "roles/storage.objectAdmin",
            values["bucket_name"],
            f"serviceAccount:{values['service_account_email']}",
        )
        assert mocks.of_type(FIREWALL) == [], "API and SSH are closed by default"
        for typ, action in ((INSTANCE, "STOP"), (TEMPLATE, "DELETE")):
            inputs = mocks.one(typ).inputs
            scheduling = inputs["scheduling"]
            assert scheduling["provisioningModel"] == "SPOT" and scheduling["preemptible"] is True, typ
            assert scheduling["automaticRestart"] is False and scheduling["onHostMaintenance"] == "TERMINATE", typ
            assert scheduling["instanceTerminationAction"] == action, typ
            assert all(inputs["shieldedInstanceConfig"].values()), typ
            assert inputs["serviceAccount"]["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"], typ
            user_data = inputs["metadata"]["user-data"]
            assert env(user_data)["GCS_BUCKET"] == values["bucket_name"], typ
            assert env(user_data)["STORAGE_BACKEND"] == "gcp", typ
            for marker in ("accountkey=", "sig=", "-----begin", "password"):
                assert marker not in user_data.lower(), f"{typ}: {marker}"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_freeze_turns_api_read_only_scales_workers_to_zero_and_exports_frozen(mocks, configure, exports):
    configure(GCP_CONFIG, freeze=True, workerCount=4)

    outputs = gcp_source.main()

    def check(values):
        assert values["frozen"] is True
        assert env(mocks.one(INSTANCE).inputs["metadata"]["user-data"])["READ_ONLY"] == "true"
        assert env(mocks.one(TEMPLATE).inputs["metadata"]["user-data"])["READ_ONLY"] == "true"
        assert mocks.one(MIG).inputs["targetSize"] == 0

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_freeze_waits_for_the_workers_to_be_deleted_before_writing_the_marker(mocks, configure, exports):
    configure(GCP_CONFIG, freeze=True)

    outputs = gcp_source.main()

    def check(values):
        group = mocks.one(MIG)
        assert group.inputs["waitForInstances"] is True, "the resize is DONE before instances are deleted"
        assert group.inputs["waitForInstancesStatus"] == "STABLE"
        marker = mocks.one(MARKER)
        assert marker.inputs["bucket"] == values["bucket_name"]
        assert marker.inputs["name"] == FREEZE_MARKER_KEY == values["freeze_marker"]
        assert values["freeze_marker_generation"] == 1764620000000000
        depends = marker.options["dependencies"]
        for resource in (group, mocks.one(INSTANCE)):
            assert any(urn.endswith(f"${resource.type}::{resource.name}") for urn in depends), (
                f"the marker (and so frozen=true) must wait for {resource.name}: {depends}"
            )

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_frozen_is_derived_from_the_marker_not_from_config(mocks, configure, exports):
    configure(GCP_CONFIG, freeze=True)

    outputs = gcp_source.main()

    def check(resources):
        assert any(getattr(r, "_name", None) == "spotshift-freeze-object" for r in resources), resources

    return pulumi.Output.from_input(outputs["frozen"].resources()).apply(check)


@pulumi.runtime.test
def test_unfrozen_group_does_not_wait_so_a_spot_stock_out_cannot_hold_a_deploy(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        assert mocks.one(MIG).inputs["waitForInstances"] is False

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_unfrozen_workers_follow_worker_count(mocks, configure, exports):
    configure(GCP_CONFIG, workerCount=4)

    outputs = gcp_source.main()

    def check(_):
        assert mocks.one(MIG).inputs["targetSize"] == 4
        assert env(mocks.one(INSTANCE).inputs["metadata"]["user-data"])["READ_ONLY"] == "false"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_config_reaches_the_resources(mocks, configure, exports):
    configure(
        GCP_CONFIG,
        provisioningModel="preemptible",
        machineType="n2d-standard-2",
        apiPort=9090,
        allowedCidrs="203.0.113.0/24, 198.51.100.7",
        bucketForceDestroy=True,
        bucketVersioning=True,
    )

    outputs = gcp_source.main()

    def check(values):
        instance = mocks.one(INSTANCE).inputs
        assert instance["scheduling"] == {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
        assert instance["machineType"] == "n2d-standard-2"
        assert mocks.one(FIREWALL).inputs["sourceRanges"] == ["203.0.113.0/24", "198.51.100.7/32"]
        assert mocks.one(FIREWALL).inputs["allows"] == [{"protocol": "tcp", "ports": ["9090"]}]
        assert values["api_url"].endswith(":9090")
        bucket = mocks.one("gcp:storage/bucket:Bucket").inputs
        assert bucket["forceDestroy"] is True and bucket["versioning"] == {"enabled": True}

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_api_vm_replacement_mechanism_is_set(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        instance = mocks.one(INSTANCE)
        assert instance.options["replaceOnChanges"] == ["metadata"]
        assert instance.options["deleteBeforeReplace"] is True
        assert mocks.one(TEMPLATE).inputs["namePrefix"] == "spotshift-workers-"
        assert mocks.one(MIG).inputs["updatePolicy"]["type"] == "PROACTIVE"

    return resolved(outputs).apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"allowedCidrs": ["203.0.113.0/33"]}, r"spotshift:allowedCidrs must hold IPv4 CIDRs.*203\.0\.113\.0/33"),
        ({"allowedCidrs": ["10.0.0.1/8"]}, r"spotshift:allowedCidrs .*10\.0\.0\.1/8"),
        ({"allowedCidrs": ["2001:db8::/32"]}, r"spotshift:allowedCidrs must hold IPv4 CIDRs; the VMs have no IPv6"),
        ({"sshSourceCidr": "my-laptop"}, r"spotshift:sshSourceCidr must hold IPv4 CIDRs"),
        ({"workerCount": -1}, r"spotshift:workerCount must be an integer from 0 to 1000 \(got '-1'\)"),
        ({"workerCount": "two"}, r"spotshift:workerCount must be an integer"),
        ({"apiPort": 22}, r"spotshift:apiPort must not be 22"),
        ({"apiPort": 70000}, r"spotshift:apiPort must be an integer from 1 to 65535"),
        ({"provisioningModel": "STANDARD"}, r"spotshift:provisioningModel must be one of SPOT, preemptible \(got 'STANDARD'\)"),
        ({"freeze": "yes"}, r"spotshift:freeze must be true or false \(got 'yes'\)"),
        ({"bucketSoftDeleteDays": 3}, r"spotshift:bucketSoftDeleteDays must be 0 \(off\) or 7 to 90"),
        ({"bucketSoftDeleteDays": 91}, r"spotshift:bucketSoftDeleteDays must be an integer from 0 to 90"),
        ({"noncurrentVersionDays": 0}, r"spotshift:noncurrentVersionDays must be an integer from 1 to 3650"),
        ({"workerPublicIp": "maybe"}, r"spotshift:workerPublicIp must be true or false"),
        ({"gcp:project": None}, r"gcp:project is required"),
        ({"gcp:project": "My Project"}, r"gcp:project must be a GCP project id"),
        ({"gcp:zone": "europe-west1-b"}, r"gcp:zone must be a zone of gcp:region us-central1"),
        ({"image": None}, r"spotshift:image is required.*spotshift:buildImage"),
    ],
)
def test_bad_config_fails_with_one_message_naming_the_key(mocks, configure, overrides, message):
    configure(GCP_CONFIG, **overrides)

    with pytest.raises(ConfigError, match=message):
        gcp_source.load_config()


def test_bad_config_fails_before_any_resource_is_created(mocks, configure, exports):
    configure(GCP_CONFIG, workerCount=-1)

    @pulumi.runtime.test
    def deploy():
        with pytest.raises(ConfigError, match="spotshift:workerCount"):
            gcp_source.main()
        return pulumi.Output.from_input(None)

    deploy()

    assert mocks.registrations == []
    assert exports == {}


def test_build_needs_a_dockerfile(mocks, configure, monkeypatch, tmp_path):
    configure(GCP_CONFIG, buildImage=True, image=None)
    monkeypatch.setattr(gcp_source, "REPO_ROOT", tmp_path)

    with pytest.raises(ConfigError, match="spotshift:buildImage is true but there is no Dockerfile"):
        gcp_source.load_config()


def test_defaults_are_safe(mocks, configure):
    configure(GCP_CONFIG)

    config = gcp_source.load_config()

    assert config.allowed_cidrs == [] and config.ssh_source_cidr is None
    assert (config.worker_count, config.api_port, config.provisioning_model) == (2, 8080, "SPOT")
    assert (config.bucket_force_destroy, config.bucket_versioning, config.freeze, config.build_image) == (
        False,
        True,
        False,
        False,
    )
    assert (config.bucket_soft_delete_days, config.noncurrent_version_days) == (7, 7)
    assert (config.worker_public_ip, config.flow_logs) == (False, True)
    assert config.zone == "us-central1-b"


BUCKET = "gcp:storage/bucket:Bucket"


@pulumi.runtime.test
def test_destroy_keeps_the_bucket_by_default_and_the_state_records_it(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        bucket = mocks.one(BUCKET)
        # retainOnDelete travels with the registration into the state, which is what `destroy` reads.
        assert bucket.options["retainOnDelete"] is True
        assert bucket.inputs["forceDestroy"] is False

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_force_destroy_lets_destroy_delete_the_bucket_and_its_objects(mocks, configure, exports):
    configure(GCP_CONFIG, bucketForceDestroy=True)

    outputs = gcp_source.main()

    def check(_):
        bucket = mocks.one(BUCKET)
        assert bucket.options["retainOnDelete"] is False
        assert bucket.inputs["forceDestroy"] is True

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_bucket_keeps_versions_and_soft_deletes_for_a_chosen_time(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        bucket = mocks.one(BUCKET).inputs
        assert bucket["versioning"] == {"enabled": True}
        assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 7 * 86400}
        assert bucket["lifecycleRules"] == [
            {"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 7}}
        ], "noncurrent versions of the queue's documents must not pile up forever"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_soft_delete_off_and_no_versioning_are_explicit_choices(mocks, configure, exports):
    configure(GCP_CONFIG, bucketSoftDeleteDays=0, bucketVersioning=False)

    outputs = gcp_source.main()

    def check(_):
        bucket = mocks.one(BUCKET).inputs
        assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 0}
        assert bucket["versioning"] == {"enabled": False}
        assert bucket.get("lifecycleRules") in (None, [])

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_subnet_has_flow_logs_and_workers_leave_through_cloud_nat(mocks, configure, exports):
    configure(GCP_CONFIG)

    outputs = gcp_source.main()

    def check(_):
        subnet = mocks.one("gcp:compute/subnetwork:Subnetwork")
        assert subnet.inputs["logConfig"] == {
            "aggregationInterval": "INTERVAL_5_MIN", "flowSampling": 0.5, "metadata": "INCLUDE_ALL_METADATA"
        }
        template = mocks.one(TEMPLATE).inputs
        assert template["networkInterfaces"][0].get("accessConfigs") in (None, []), "no public IP on workers"
        nat = mocks.one("gcp:compute/routerNat:RouterNat").inputs
        assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
        assert nat["subnetworks"] == [{"name": subnet.id, "sourceIpRangesToNats": ["ALL_IP_RANGES"]}]
        nat_urn_suffix = "gcp:compute/routerNat:RouterNat::spotshift-net-nat"
        assert any(urn.endswith(nat_urn_suffix) for urn in mocks.one(TEMPLATE).options["dependencies"]), (
            "workers must not boot before their way out exists"
        )

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_worker_public_ip_replaces_cloud_nat_and_flow_logs_can_be_turned_off(mocks, configure, exports):
    configure(GCP_CONFIG, workerPublicIp=True, flowLogs=False)

    outputs = gcp_source.main()

    def check(_):
        template = mocks.one(TEMPLATE).inputs
        assert template["networkInterfaces"][0]["accessConfigs"] == [{"networkTier": "PREMIUM"}]
        assert mocks.of_type("gcp:compute/routerNat:RouterNat") == []
        assert mocks.of_type("gcp:compute/router:Router") == []
        assert mocks.one("gcp:compute/subnetwork:Subnetwork").inputs.get("logConfig") is None

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_registry_repository_id_is_per_stack(mocks, configure, exports):
    configure(GCP_CONFIG, buildImage=True, image=None)

    outputs = gcp_source.main()

    def check(_):
        repository = mocks.one("gcp:artifactregistry/repository:Repository").inputs
        # The mocks run the stack named "test"; a second stack in the same project gets another id.
        assert repository["repositoryId"] == "spotshift-registry-test"

    return resolved(outputs).apply(check)
