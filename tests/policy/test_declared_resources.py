"""Rules against resources declared through the real SDKs under mocks: the wire names they read are the ones the
SDKs send (``encryption_at_host`` -> ``encryptionAtHost``, ``i_p_address_or_range`` -> ``iPAddressOrRange``, ...)."""

from __future__ import annotations

import base64

import pulumi
import pulumi_azure_native as azure_native
import pulumi_gcp as gcp

from infra.gcp.spot import spot_scheduling
from policy.spotshift_policy import POLICIES
from tests.infra.pulumi_mocks import settled
from tests.policy.harness import evaluate

CLEAN_CLOUD_INIT = "#cloud-config\nusers:\n  - name: spotshift\n    lock_passwd: true\n"
RG = "/subscriptions/sub/resourceGroups/rg"
LINUX = {"disable_password_authentication": True, "ssh": {"public_keys": [{"path": "/home/a/.ssh/authorized_keys", "key_data": "ssh-ed25519 AAAA a"}]}}
SECURE_HOST = {"security_type": "TrustedLaunch", "encryption_at_host": True, "uefi_settings": {"secure_boot_enabled": True}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def declare_baseline() -> None:
    """One resource of each kind the stacks use, declared as the baseline wants it."""
    gcp.storage.Bucket(
        "good-bucket",
        location="US-CENTRAL1",
        uniform_bucket_level_access=True,
        public_access_prevention="enforced",
        versioning={"enabled": True},
        soft_delete_policy={"retention_duration_seconds": 604800},
    )
    gcp.compute.Subnetwork(
        "good-subnet",
        network="vpc",
        ip_cidr_range="10.42.0.0/24",
        log_config={"aggregation_interval": "INTERVAL_5_MIN", "flow_sampling": 0.5, "metadata": "INCLUDE_ALL_METADATA"},
    )
    gcp.compute.InstanceTemplate(
        "good-template",
        name_prefix="good-",
        project="p",
        machine_type="e2-standard-2",
        disks=[{"boot": True, "source_image": "ubuntu-os-cloud/ubuntu-2404-lts-amd64"}],
        scheduling=spot_scheduling("SPOT", "DELETE"),
        network_interfaces=[{"subnetwork": "subnet"}],
        metadata={"user-data": CLEAN_CLOUD_INIT},
    )
    gcp.storage.BucketIAMMember("good-grant", bucket="b", role="roles/storage.objectAdmin", member="serviceAccount:w@p.iam.gserviceaccount.com")
    account = azure_native.storage.StorageAccount(
        "good-account",
        resource_group_name="rg",
        account_name="spotshiftgood",
        kind="StorageV2",
        sku={"name": "Standard_LRS"},
        allow_blob_public_access=False,
        minimum_tls_version="TLS1_2",
        enable_https_traffic_only=True,
        allow_shared_key_access=False,
        network_rule_set={"default_action": "Deny", "ip_rules": [{"i_p_address_or_range": "203.0.113.7"}]},
        opts=pulumi.ResourceOptions(protect=True),
    )
    azure_native.storage.BlobServiceProperties(
        "good-blob-service",
        resource_group_name="rg",
        account_name=account.name,
        blob_services_name="default",
        delete_retention_policy={"enabled": True, "days": 7},
        container_delete_retention_policy={"enabled": True, "days": 7},
        is_versioning_enabled=True,
    )
    azure_native.storage.BlobContainer(
        "good-container",
        resource_group_name="rg",
        account_name=account.name,
        container_name="data",
        public_access="None",
        opts=pulumi.ResourceOptions(protect=True),
    )
    azure_native.authorization.RoleAssignment(
        "good-role", principal_id="p", role_definition_id="/subscriptions/sub/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        scope=account.id,
    )
    azure_native.compute.VirtualMachine(
        "good-vm",
        resource_group_name="rg",
        priority="Spot",
        eviction_policy="Deallocate",
        billing_profile={"max_price": -1},
        security_profile=SECURE_HOST,
        os_profile={"admin_username": "a", "custom_data": b64(CLEAN_CLOUD_INIT), "allow_extension_operations": False, "linux_configuration": LINUX},
    )
    azure_native.compute.VirtualMachineScaleSet(
        "good-vmss",
        resource_group_name="rg",
        upgrade_policy={"mode": "Automatic", "automatic_os_upgrade_policy": {"enable_automatic_os_upgrade": True}},
        virtual_machine_profile={
            "priority": "Spot",
            "eviction_policy": "Delete",
            "security_profile": SECURE_HOST,
            "os_profile": {"admin_username": "a", "custom_data": b64(CLEAN_CLOUD_INIT), "linux_configuration": LINUX},
        },
    )


#: Deliberately bad resources, each with the rules that must report it.
BAD_RULES = {
    "open-ssh": {"no-world-open-ingress"},
    "public-member": {"no-public-storage"},
    "public-acl": {"no-public-storage"},
    "project-storage-role": {"identities-scoped-to-one-store"},
    "on-demand-vm": {"spot-everywhere", "no-secrets-in-user-data"},
    "open-rule": {"no-world-open-ingress"},
    "rg-role": {"identities-scoped-to-one-store"},
    "password-vm": {"spot-everywhere", "no-password-login", "no-secrets-in-user-data"},
    "public-container": {"no-public-storage", "data-stores-protected"},
}


def declare_bad() -> None:
    """The resources of BAD_RULES."""
    gcp.compute.Firewall("open-ssh", network="vpc", source_ranges=["0.0.0.0/0"], allows=[{"protocol": "tcp", "ports": ["22"]}])
    gcp.storage.BucketIAMMember("public-member", bucket="b", role="roles/storage.objectViewer", member="allUsers")
    gcp.storage.BucketACL("public-acl", bucket="b", role_entities=["READER:allUsers"])
    gcp.projects.IAMMember("project-storage-role", project="p", role="roles/storage.objectAdmin", member="serviceAccount:w@p.iam.gserviceaccount.com")
    gcp.compute.Instance(
        "on-demand-vm",
        machine_type="e2-standard-2",
        zone="us-central1-a",
        boot_disk={"initialize_params": {"image": "debian-12"}},
        network_interfaces=[{"subnetwork": "subnet"}],
        scheduling={"provisioning_model": "STANDARD"},
        metadata_startup_script="echo 'DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==' > /etc/conn",
    )
    azure_native.network.SecurityRule(
        "open-rule", resource_group_name="rg", network_security_group_name="nsg", priority=100, direction="Inbound",
        access="Allow", protocol="Tcp", source_address_prefix="*", source_port_range="*", destination_address_prefix="*",
        destination_port_range="22",
    )
    azure_native.authorization.RoleAssignment("rg-role", principal_id="p", role_definition_id="/subscriptions/sub/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c", scope=RG)
    azure_native.compute.VirtualMachine(
        "password-vm",
        resource_group_name="rg",
        priority="Regular",
        security_profile=SECURE_HOST,
        user_data=b64("ADMIN_PASSWORD=correct-horse-battery"),
        os_profile={"admin_username": "a", "admin_password": "Correct-Horse-1", "allow_extension_operations": False,
                    "linux_configuration": {"disable_password_authentication": False}},
    )
    azure_native.storage.BlobContainer(
        "public-container", resource_group_name="rg", account_name="acct", container_name="data", public_access="Blob"
    )


@pulumi.runtime.test
def test_sdk_declared_resources_that_meet_the_baseline_pass_every_rule(mocks):
    declare_baseline()

    def check(_):
        results = evaluate(POLICIES, mocks.registrations)
        found = [message for result in results.values() for message in result.violations]
        assert found == []
        inspected = {rule for rule, result in results.items() if result.checked}
        assert inspected == {policy.name for policy in POLICIES} - {"no-world-open-ingress"}, "every rule inspected something"

    return settled().apply(check)


@pulumi.runtime.test
def test_sdk_declared_bad_resources_are_reported_by_their_rules(mocks):
    declare_bad()

    def check(_):
        results = evaluate(POLICIES, mocks.registrations)
        reported: dict[str, set[str]] = {name: set() for name in BAD_RULES}
        for rule, result in results.items():
            for message in result.violations:
                for name in BAD_RULES:
                    if f" {name!r}: " in message:
                        reported[name].add(rule)
        assert {name: rules & BAD_RULES[name] for name, rules in reported.items()} == BAD_RULES
        assert all("correct-horse" not in message.lower() for result in results.values() for message in result.violations)

    return settled().apply(check)
