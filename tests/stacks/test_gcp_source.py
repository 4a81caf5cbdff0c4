"""The gcp-source program under mocks: resources, exports, freeze and config validation."""

from __future__ import annotations

from collections import Counter

import pulumi
import pytest
import yaml

from stacks import gcp_source
from stacks._config import ConfigError
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
EXPORTS = {"bucket_name", "api_url", "api_ip", "frozen", "service_account_email", "project", "worker_group"}


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
        assert sum(DEFAULT_RESOURCES.values()) == 9

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
        False,
        False,
        False,
    )
    assert config.zone == "us-central1-b"
