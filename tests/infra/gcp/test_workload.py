"""GcpSpotWorkload under mocks: spot scheduling, lock-down, grants, and how a new cloud-init rolls out."""

from __future__ import annotations

from typing import Any

import pulumi
import yaml

from infra.cloud_init import ENV_FILE, REGISTRY_LOGIN_SCRIPT
from infra.gcp import GcpSpotWorkload, GcpSpotWorkloadArgs
from infra.images import ImageBuildArgs
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

from tests.infra.pulumi_mocks import DIGEST, GCP_ACCESS_TOKEN, GCP_API_IP, Registration, settled

INSTANCE = "gcp:compute/instance:Instance"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
MIG = "gcp:compute/instanceGroupManager:InstanceGroupManager"
FIREWALL = "gcp:compute/firewall:Firewall"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
ACCOUNT = "gcp:serviceaccount/account:Account"
IMAGE = "ghcr.io/example/spotshift:1.0.0"
SA_EMAIL = "spotshift-test@proj-123.iam.gserviceaccount.com"


def workload(**overrides: Any) -> GcpSpotWorkload:
    args: dict[str, Any] = {"project": "proj-123", "region": "us-central1", "zone": "us-central1-b", "image": IMAGE}
    args.update(overrides)
    return GcpSpotWorkload("spotshift", GcpSpotWorkloadArgs(**args))


def user_data(registration: Registration) -> dict:
    return yaml.safe_load(registration.inputs["metadata"]["user-data"])


def env(registration: Registration) -> dict[str, str]:
    files = {entry["path"]: entry["content"] for entry in user_data(registration)["write_files"]}
    return dict(line.split("=", 1) for line in files[ENV_FILE].splitlines())


@pulumi.runtime.test
def test_api_vm_is_spot_and_stops_on_preemption(mocks):
    workload()

    def check(_):
        scheduling = mocks.one(INSTANCE).inputs["scheduling"]
        assert scheduling == {
            "provisioningModel": "SPOT",
            "preemptible": True,
            "automaticRestart": False,
            "onHostMaintenance": "TERMINATE",
            "instanceTerminationAction": "STOP",
        }, f"API VM scheduling: {scheduling}"
        assert mocks.one(INSTANCE).inputs["desiredStatus"] == "RUNNING", "`pulumi up --refresh` restarts it"

    return settled().apply(check)


@pulumi.runtime.test
def test_worker_template_is_spot_and_deletes_on_preemption(mocks):
    workload()

    def check(_):
        scheduling = mocks.one(TEMPLATE).inputs["scheduling"]
        assert scheduling == {
            "provisioningModel": "SPOT",
            "preemptible": True,
            "automaticRestart": False,
            "onHostMaintenance": "TERMINATE",
            "instanceTerminationAction": "DELETE",
        }, f"worker template scheduling: {scheduling}"

    return settled().apply(check)


@pulumi.runtime.test
def test_preemptible_model_sets_no_spot_only_fields(mocks):
    workload(provisioning_model="preemptible")

    def check(_):
        for typ in (INSTANCE, TEMPLATE):
            scheduling = mocks.one(typ).inputs["scheduling"]
            assert scheduling == {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}, typ

    return settled().apply(check)


@pulumi.runtime.test
def test_vms_are_shielded_and_run_as_the_workload_service_account(mocks):
    workload()

    def check(_):
        account = mocks.one(ACCOUNT)
        assert account.inputs["accountId"] == "spotshift-test"
        for typ in (INSTANCE, TEMPLATE):
            inputs = mocks.one(typ).inputs
            assert inputs["shieldedInstanceConfig"] == {
                "enableSecureBoot": True,
                "enableVtpm": True,
                "enableIntegrityMonitoring": True,
            }, typ
            assert inputs["serviceAccount"] == {
                "email": SA_EMAIL,
                "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            }, typ
            assert inputs["metadata"]["enable-oslogin"] == "TRUE", typ
            assert "ubuntu-2404-lts" in str(inputs.get("bootDisk") or inputs.get("disks")), typ

    return settled().apply(check)


@pulumi.runtime.test
def test_bucket_is_private_uniform_and_kept_on_destroy(mocks):
    workload()

    def check(_):
        bucket = mocks.one(BUCKET).inputs
        assert bucket["uniformBucketLevelAccess"] is True
        assert bucket["publicAccessPrevention"] == "enforced"
        assert bucket["forceDestroy"] is False
        assert mocks.one(BUCKET).options["retainOnDelete"] is True
        assert bucket["versioning"] == {"enabled": True}
        assert bucket["location"] == "US-CENTRAL1"

    return settled().apply(check)


@pulumi.runtime.test
def test_bucket_options_follow_the_args(mocks):
    workload(bucket_force_destroy=True, bucket_versioning=False, bucket_soft_delete_days=30)

    def check(_):
        bucket = mocks.one(BUCKET).inputs
        assert bucket["forceDestroy"] is True
        assert mocks.one(BUCKET).options["retainOnDelete"] is False
        assert bucket["versioning"] == {"enabled": False}
        assert bucket["softDeletePolicy"] == {"retentionDurationSeconds": 30 * 86400}

    return settled().apply(check)


@pulumi.runtime.test
def test_service_account_is_object_admin_on_its_bucket_only(mocks):
    workload()

    def check(_):
        grant = mocks.one(BUCKET_IAM).inputs
        bucket = mocks.one(BUCKET)
        assert grant["role"] == "roles/storage.objectAdmin"
        assert grant["member"] == f"serviceAccount:{SA_EMAIL}"
        # Scoped to the bucket the component created, by name (the mock's computed name).
        assert grant["bucket"].startswith(f"{bucket.name}-") and len(grant["bucket"]) == len(bucket.name) + 8
        assert not mocks.of_type("gcp:projects/iAMMember:IAMMember"), "no project-wide grant"
        assert not mocks.of_type("gcp:storage/bucketIAMPolicy:BucketIAMPolicy"), "never mix IAMPolicy with IAMMember"

    return settled().apply(check)


@pulumi.runtime.test
def test_api_port_is_closed_and_ssh_has_no_rule_by_default(mocks):
    workload()

    def check(_):
        assert mocks.of_type(FIREWALL) == [], "no allowedCidrs and no sshSourceCidr must mean no ingress rule"
        network = mocks.one("gcp:compute/network:Network").inputs
        assert network["autoCreateSubnetworks"] is False

    return settled().apply(check)


@pulumi.runtime.test
def test_api_port_opens_only_from_allowed_cidrs_to_the_api_vm(mocks):
    workload(allowed_cidrs=["203.0.113.0/24", "198.51.100.7/32"], api_port=9090)

    def check(_):
        rule = mocks.one(FIREWALL).inputs
        instance = mocks.one(INSTANCE).inputs
        assert rule["direction"] == "INGRESS"
        assert rule["allows"] == [{"protocol": "tcp", "ports": ["9090"]}]
        assert rule["sourceRanges"] == ["203.0.113.0/24", "198.51.100.7/32"]
        assert rule["targetTags"] == instance["tags"] == ["spotshift-api"]
        assert mocks.one(TEMPLATE).inputs["tags"] == ["spotshift-worker"], "workers are not API targets"

    return settled().apply(check)


@pulumi.runtime.test
def test_ssh_opens_only_from_the_configured_cidr(mocks):
    workload(ssh_source_cidr="192.0.2.4/32")

    def check(_):
        rule = mocks.one(FIREWALL).inputs
        assert rule["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
        assert rule["sourceRanges"] == ["192.0.2.4/32"]
        assert sorted(rule["targetTags"]) == ["spotshift-api", "spotshift-worker"]

    return settled().apply(check)


@pulumi.runtime.test
def test_user_data_configures_the_gcs_backend_without_credentials(mocks):
    workload()

    def check(_):
        bucket_name = mocks.one(BUCKET_IAM).inputs["bucket"]
        for typ, role in ((INSTANCE, "api"), (TEMPLATE, "worker")):
            registration = mocks.one(typ)
            assert env(registration) == {
                "STORAGE_BACKEND": "gcp",
                "GCS_BUCKET": bucket_name,
                "GCS_PROJECT": "proj-123",
                "READ_ONLY": "false",
                "LEASE_SECONDS": "60",
                "WORKER_GRACE_SECONDS": "20",
                "EVICTION_WATCH": "gcp",
            }, typ
            text = registration.inputs["metadata"]["user-data"].lower()
            assert f"/etc/systemd/system/spotshift-{role}.service" in text
            for marker in ("accountkey=", "sig=", "-----begin", "password", "private_key"):
                assert marker not in text, f"{typ} user-data contains {marker}"

    return settled().apply(check)


@pulumi.runtime.test
def test_freeze_makes_api_read_only_and_scales_workers_to_zero(mocks):
    component = workload(freeze=True, worker_count=5)

    def check(frozen):
        assert env(mocks.one(INSTANCE))["READ_ONLY"] == "true"
        assert mocks.one(MIG).inputs["targetSize"] == 0
        assert mocks.one(MIG).inputs["waitForInstances"] is True
        assert frozen is True

    return pulumi.Output.all(settled(), component.frozen).apply(lambda values: check(values[1]))


@pulumi.runtime.test
def test_worker_group_size_follows_worker_count(mocks):
    workload(worker_count=3)

    def check(_):
        assert mocks.one(MIG).inputs["targetSize"] == 3

    return settled().apply(check)


@pulumi.runtime.test
def test_changed_cloud_init_replaces_the_api_vm_before_reusing_its_ip(mocks):
    workload()

    def check(_):
        instance = mocks.one(INSTANCE)
        assert "metadata" in instance.options["replaceOnChanges"], instance.options
        # The static IP can serve one VM at a time: delete first, then create.
        assert instance.options["deleteBeforeReplace"] is True
        assert instance.inputs["networkInterfaces"][0]["accessConfigs"][0]["natIp"] == GCP_API_IP

    return settled().apply(check)


@pulumi.runtime.test
def test_changed_cloud_init_rolls_a_new_template_through_the_group(mocks):
    workload()

    def check(_):
        template = mocks.one(TEMPLATE)
        group = mocks.one(MIG).inputs
        # A fresh name per template version lets Pulumi create the new one first.
        assert template.inputs["namePrefix"] == "spotshift-workers-"
        assert "name" not in template.inputs
        assert template.options["deleteBeforeReplace"] is False
        assert group["versions"][0]["instanceTemplate"].endswith("?uniqueId=4242")
        assert group["updatePolicy"] == {
            "type": "PROACTIVE",
            "minimalAction": "REPLACE",
            "maxSurgeFixed": 1,
            "maxUnavailableFixed": 0,
        }

    return settled().apply(check)


@pulumi.runtime.test
def test_a_new_image_changes_the_user_data_that_triggers_replacement(mocks):
    workload(image="ghcr.io/example/spotshift:1.0.0")
    GcpSpotWorkload(
        "spotshift-two",
        GcpSpotWorkloadArgs(
            project="proj-123", region="us-central1", zone="us-central1-b", image="ghcr.io/example/spotshift:1.1.0"
        ),
    )

    def check(_):
        first, second = mocks.of_type(INSTANCE)
        assert first.inputs["metadata"]["user-data"] != second.inputs["metadata"]["user-data"]
        for instance in (first, second):
            assert instance.options["replaceOnChanges"] == ["metadata"], instance.name

    return settled().apply(check)


@pulumi.runtime.test
def test_build_pushes_to_artifact_registry_and_vms_pull_the_digest(mocks):
    workload(image=None, build=ImageBuildArgs(context="/src", dockerfile="/src/Dockerfile"))

    def check(_):
        repository = mocks.one("gcp:artifactregistry/repository:Repository").inputs
        reader = mocks.one("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember").inputs
        image = mocks.one("docker:index/image:Image").inputs
        assert repository["format"] == "DOCKER" and repository["location"] == "us-central1"
        assert reader["role"] == "roles/artifactregistry.reader"
        assert reader["member"] == f"serviceAccount:{SA_EMAIL}"
        assert image["imageName"] == "us-central1-docker.pkg.dev/proj-123/spotshift-registry-test/spotshift:latest"
        assert unwrap_rpc_secret(image["registry"])["username"] == "oauth2accesstoken"
        assert image["buildOnPreview"] is False
        digest_ref = f"us-central1-docker.pkg.dev/proj-123/spotshift-registry-test/spotshift@{DIGEST}"
        for typ in (INSTANCE, TEMPLATE):
            text = mocks.one(typ).inputs["metadata"]["user-data"]
            assert f"{digest_ref} " in text, typ
            assert REGISTRY_LOGIN_SCRIPT in text, typ
            assert GCP_ACCESS_TOKEN not in text, f"{typ} user-data leaks the deployer's token"

    return settled().apply(check)


@pulumi.runtime.test
def test_build_pushes_with_the_provider_token_kept_secret(mocks):
    workload(image=None, build=ImageBuildArgs(context="/src", dockerfile="/src/Dockerfile"))

    def check(_):
        registry = mocks.one("docker:index/image:Image").inputs["registry"]
        # The secret password makes the whole registry block a secret on the wire.
        assert is_rpc_secret(registry), "the registry credentials must reach the engine as a secret"
        assert unwrap_rpc_secret(registry)["password"] == GCP_ACCESS_TOKEN

    return settled().apply(check)


@pulumi.runtime.test
def test_component_outputs_are_the_resources_values(mocks):
    component = workload(allowed_cidrs=["203.0.113.0/24"])

    def check(values):
        bucket_name, email, ip, url, group = values
        assert bucket_name.startswith("spotshift-state-bucket-")
        assert email == SA_EMAIL
        assert ip == GCP_API_IP
        assert url == f"http://{GCP_API_IP}:8080"
        assert group.startswith("spotshift-workers-mig")

    return pulumi.Output.all(
        settled(),
        component.bucket_name,
        component.service_account_email,
        component.api_ip,
        component.api_url,
        component.worker_group,
    ).apply(lambda values: check(values[1:]))


def test_every_component_registers_its_outputs(mocks):
    @pulumi.runtime.test
    def deploy():
        workload()
        return settled()

    # register_outputs is an RPC of its own; the decorated run has awaited every RPC.
    deploy()

    components = {urn.rsplit("::", 1)[1]: outputs for urn, outputs in mocks.component_outputs.items()}
    assert set(components) == {"spotshift", "spotshift-net", "spotshift-state", "spotshift-api", "spotshift-workers"}
    for name, outputs in components.items():
        assert outputs, f"component {name} registered no outputs"
    assert components["spotshift"]["frozen"] is False
    assert components["spotshift"].get("freeze_marker") is None
    assert components["spotshift"]["api_url"] == f"http://{GCP_API_IP}:8080"
