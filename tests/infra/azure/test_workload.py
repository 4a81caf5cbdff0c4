"""AzureSpotWorkload under mocks: Spot settings, storage lock-down, role scopes, and cloud-init replacement."""

from __future__ import annotations

import base64
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

from infra import images
from infra.azure import AzureSpotWorkload, AzureSpotWorkloadArgs
from infra.cloud_init import ENV_FILE, REGISTRY_LOGIN_SCRIPT
from infra.images import ImageBuildArgs
from tests.infra.pulumi_mocks import (
    AZURE_API_IP,
    AZURE_CLIENT_TOKEN,
    DEPLOYER_OBJECT_ID,
    DIGEST,
    IDENTITY_CLIENT_ID,
    IDENTITY_PRINCIPAL_ID,
    SUBSCRIPTION_ID,
    TENANT_ID,
    Registration,
    settled,
)

VM = "azure-native:compute:VirtualMachine"
VMSS = "azure-native:compute:VirtualMachineScaleSet"
ACCOUNT = "azure-native:storage:StorageAccount"
CONTAINER = "azure-native:storage:BlobContainer"
ROLE = "azure-native:authorization:RoleAssignment"
NSG = "azure-native:network:NetworkSecurityGroup"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKeyForTestsOnly spotshift@test"
IMAGE = "ghcr.io/example/spotshift:1.0.0"
BLOB_DATA_CONTRIBUTOR = (
    f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/"
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
)


def workload(**overrides: Any) -> AzureSpotWorkload:
    args: dict[str, Any] = {"location": "westeurope", "ssh_public_key": SSH_KEY, "image": IMAGE}
    args.update(overrides)
    return AzureSpotWorkload("spotshift", AzureSpotWorkloadArgs(**args))


def vm_cloud_init(registration: Registration) -> str:
    return base64.b64decode(registration.inputs["osProfile"]["customData"]).decode()


def vmss_cloud_init(registration: Registration) -> str:
    profile = registration.inputs["virtualMachineProfile"]
    return base64.b64decode(profile["osProfile"]["customData"]).decode()


def env(document: str) -> dict[str, str]:
    files = {entry["path"]: entry["content"] for entry in yaml.safe_load(document)["write_files"]}
    return dict(line.split("=", 1) for line in files[ENV_FILE].splitlines())


def by_name(registrations: list[Registration], suffix: str) -> Registration:
    found = [registration for registration in registrations if registration.name.endswith(suffix)]
    assert len(found) == 1, [registration.name for registration in registrations]
    return found[0]


@pulumi.runtime.test
def test_api_vm_is_spot_never_evicted_for_price(mocks):
    workload()

    def check(_):
        vm = mocks.one(VM).inputs
        assert vm["priority"] == "Spot"
        assert vm["evictionPolicy"] == "Deallocate"
        assert vm["billingProfile"] == {"maxPrice": -1}
        assert vm["storageProfile"]["imageReference"] == {
            "publisher": "Canonical",
            "offer": "ubuntu-24_04-lts",
            "sku": "server",
            "version": "latest",
        }
        assert vm["securityProfile"] == {
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
            "encryptionAtHost": True,
        }
        assert vm["osProfile"]["allowExtensionOperations"] is False
        assert vm["storageProfile"]["osDisk"]["deleteOption"] == "Delete"

    return settled().apply(check)


@pulumi.runtime.test
def test_worker_scale_set_is_spot_with_restore_and_automatic_upgrades(mocks):
    workload(worker_count=4, eviction_policy="Delete")

    def check(_):
        # (the API VM follows eviction_policy; the workers are always deleted)
        vmss = mocks.one(VMSS).inputs
        profile = vmss["virtualMachineProfile"]
        assert vmss["sku"]["capacity"] == 4
        assert vmss["orchestrationMode"] == "Uniform"
        assert vmss["spotRestorePolicy"] == {"enabled": True}
        assert vmss["upgradePolicy"] == {"mode": "Automatic"}
        assert vmss["overprovision"] is False
        assert profile["priority"] == "Spot"
        assert profile["evictionPolicy"] == "Delete"
        assert profile["billingProfile"] == {"maxPrice": -1}
        assert mocks.one(VM).inputs["evictionPolicy"] == "Delete"
        assert profile["scheduledEventsProfile"] == {
            "terminateNotificationProfile": {"enable": True, "notBeforeTimeout": "PT5M"}
        }, "scale-in and replacement must announce a Terminate event the workers drain on"

    return settled().apply(check)


@pulumi.runtime.test
def test_role_assignments_are_replaced_by_deleting_first(mocks, monkeypatch):
    monkeypatch.setattr(images, "exchange_acr_refresh_token", lambda *args: "acr-refresh-token")
    workload(image=None, build=ImageBuildArgs(context="/src", dockerfile="/src/Dockerfile"))

    def check(_):
        grants = mocks.of_type(ROLE)
        assert len(grants) == 3, [g.name for g in grants]
        for grant in grants:
            assert grant.options["deleteBeforeReplace"] is True, f"{grant.name}: Azure allows one per principal"

    return settled().apply(check)


@pulumi.runtime.test
def test_login_is_ssh_key_only(mocks):
    workload()

    def check(_):
        vm_os = mocks.one(VM).inputs["osProfile"]
        vmss_os = mocks.one(VMSS).inputs["virtualMachineProfile"]["osProfile"]
        for name, os_profile in (("VM", vm_os), ("VMSS", vmss_os)):
            linux = os_profile["linuxConfiguration"]
            assert linux["disablePasswordAuthentication"] is True, name
            assert linux["ssh"]["publicKeys"] == [
                {"path": "/home/spotshift/.ssh/authorized_keys", "keyData": SSH_KEY}
            ], name
            assert "adminPassword" not in os_profile, name

    return settled().apply(check)


@pulumi.runtime.test
def test_vms_run_as_the_user_assigned_identity(mocks):
    workload()

    def check(_):
        identity_id = mocks.one(IDENTITY).id
        for typ in (VM, VMSS):
            assert mocks.one(typ).inputs["identity"] == {
                "type": "UserAssigned",
                "userAssignedIdentities": [identity_id],
            }, typ

    return settled().apply(check)


@pulumi.runtime.test
def test_storage_account_is_locked_down(mocks):
    workload()

    def check(_):
        account = mocks.one(ACCOUNT).inputs
        assert account["kind"] == "StorageV2"
        assert account["allowBlobPublicAccess"] is False
        assert account["minimumTlsVersion"] == "TLS1_2"
        assert account["enableHttpsTrafficOnly"] is True
        assert account["allowSharedKeyAccess"] is False
        assert 3 <= len(account["accountName"]) <= 24 and account["accountName"].isalnum()
        assert account["accountName"] == account["accountName"].lower()
        container = mocks.one(CONTAINER).inputs
        assert container["publicAccess"] == "None"
        assert container["containerName"] == "spotshift"

    return settled().apply(check)


@pulumi.runtime.test
def test_shared_key_access_follows_the_args(mocks):
    workload(allow_shared_key_access=True)

    def check(_):
        assert mocks.one(ACCOUNT).inputs["allowSharedKeyAccess"] is True

    return settled().apply(check)


@pulumi.runtime.test
def test_identity_gets_blob_data_contributor_on_the_account_only(mocks):
    workload()

    def check(_):
        account_id = mocks.one(ACCOUNT).id
        grant = by_name(mocks.of_type(ROLE), "-workload-blob-data").inputs
        assert grant["roleDefinitionId"] == BLOB_DATA_CONTRIBUTOR
        assert grant["principalId"] == IDENTITY_PRINCIPAL_ID
        assert grant["principalType"] == "ServicePrincipal"
        assert grant["scope"] == account_id
        assert "/providers/Microsoft.storage/StorageAccount/" in grant["scope"]

    return settled().apply(check)


@pulumi.runtime.test
def test_deployer_gets_data_access_for_the_migration_by_default(mocks):
    component = workload()

    def check(_):
        grant = by_name(mocks.of_type(ROLE), "-deployer-blob-data").inputs
        assert grant["principalId"] == DEPLOYER_OBJECT_ID
        assert grant["roleDefinitionId"] == BLOB_DATA_CONTRIBUTOR
        assert grant["scope"] == mocks.one(ACCOUNT).id
        assert grant["principalType"] == "User"
        assert len(component.data_access_grants) == 2

    return settled().apply(check)


@pulumi.runtime.test
def test_deployer_principal_type_follows_the_args(mocks):
    workload(deployer_principal_type="ServicePrincipal")

    def check(_):
        grant = by_name(mocks.of_type(ROLE), "-deployer-blob-data").inputs
        assert grant["principalType"] == "ServicePrincipal"

    return settled().apply(check)


@pulumi.runtime.test
def test_deployer_grant_can_be_turned_off(mocks):
    component = workload(grant_deployer_data_access=False)

    def check(_):
        assert [registration.name for registration in mocks.of_type(ROLE)] == ["spotshift-storage-workload-blob-data"]
        assert len(component.data_access_grants) == 1

    return settled().apply(check)


@pulumi.runtime.test
def test_api_port_closed_and_no_ssh_rule_by_default(mocks):
    workload()

    def check(_):
        assert mocks.one(NSG).inputs.get("securityRules", []) == []
        subnet = mocks.one("azure-native:network:Subnet").inputs
        assert subnet["networkSecurityGroup"] == {"id": mocks.one(NSG).id}
        assert "subnets" not in mocks.one("azure-native:network:VirtualNetwork").inputs

    return settled().apply(check)


@pulumi.runtime.test
def test_nsg_mirrors_the_firewall_rules_when_configured(mocks):
    workload(allowed_cidrs=["203.0.113.0/24"], ssh_source_cidr="192.0.2.4/32", api_port=9090)

    def check(_):
        rules = {rule["name"]: rule for rule in mocks.one(NSG).inputs["securityRules"]}
        asg_id = mocks.one("azure-native:network:ApplicationSecurityGroup").id
        assert set(rules) == {"allow-api", "allow-ssh"}
        api, ssh = rules["allow-api"], rules["allow-ssh"]
        assert (api["direction"], api["access"], api["protocol"]) == ("Inbound", "Allow", "Tcp")
        assert api["sourceAddressPrefixes"] == ["203.0.113.0/24"]
        assert api["destinationPortRange"] == "9090"
        assert api["destinationApplicationSecurityGroups"] == [{"id": asg_id}]
        assert ssh["sourceAddressPrefix"] == "192.0.2.4/32"
        assert ssh["destinationPortRange"] == "22"
        nic = mocks.one("azure-native:network:NetworkInterface").inputs
        assert nic["ipConfigurations"][0]["applicationSecurityGroups"] == [{"id": asg_id}]

    return settled().apply(check)


@pulumi.runtime.test
def test_custom_data_configures_the_blob_backend_without_credentials(mocks):
    workload()

    def check(_):
        account_name = mocks.one(ACCOUNT).inputs["accountName"]
        documents = {"VM": vm_cloud_init(mocks.one(VM)), "VMSS": vmss_cloud_init(mocks.one(VMSS))}
        for name, document in documents.items():
            assert env(document) == {
                "STORAGE_BACKEND": "azure",
                "AZURE_STORAGE_ACCOUNT_URL": f"https://{account_name}.blob.core.windows.net",
                "AZURE_CONTAINER": "spotshift",
                "AZURE_CLIENT_ID": IDENTITY_CLIENT_ID,
                "READ_ONLY": "false",
                "LEASE_SECONDS": "60",
                "WORKER_GRACE_SECONDS": "20",
                "EVICTION_WATCH": "azure",
            }, name
            for marker in ("AccountKey=", "sig=", "-----BEGIN", "password", "SharedAccessSignature"):
                assert marker.lower() not in document.lower(), f"{name} custom data contains {marker}"
        assert "spotshift-api.service" in documents["VM"] and "spotshift-worker.service" not in documents["VM"]
        assert "spotshift-worker.service" in documents["VMSS"] and "spotshift-api.service" not in documents["VMSS"]

    return settled().apply(check)


@pulumi.runtime.test
def test_changed_cloud_init_replaces_the_api_vm(mocks):
    workload()

    def check(_):
        vm = mocks.one(VM)
        # Engine property paths are the wire names: osProfile.customData.
        assert vm.options["replaceOnChanges"] == ["osProfile", "securityProfile"], (
            "custom data, admin user, SSH keys and encryption at host are fixed"
        )
        # The NIC and its static IP belong to one VM at a time.
        assert vm.options["deleteBeforeReplace"] is True
        assert vm.inputs["networkProfile"]["networkInterfaces"][0]["deleteOption"] == "Detach"

    return settled().apply(check)


@pulumi.runtime.test
def test_changed_cloud_init_replaces_the_scale_set_create_first(mocks):
    workload()

    def check(_):
        vmss = mocks.one(VMSS)
        assert vmss.options["replaceOnChanges"] == [
            "virtualMachineProfile.osProfile",
            "virtualMachineProfile.evictionPolicy",
            "virtualMachineProfile.securityProfile",
        ]
        assert vmss.options["deleteBeforeReplace"] is False
        assert "vmScaleSetName" not in vmss.inputs, "an auto-generated name lets the new set exist next to the old"

    return settled().apply(check)


@pulumi.runtime.test
def test_vms_wait_for_their_data_grants(mocks):
    workload()

    def check(_):
        grants = {registration.name for registration in mocks.of_type(ROLE)}
        for typ in (VM, VMSS):
            dependencies = {urn.rsplit("::", 1)[1] for urn in mocks.one(typ).options["dependencies"]}
            assert grants <= dependencies, typ

    return settled().apply(check)


@pulumi.runtime.test
def test_build_pushes_to_acr_with_admin_user_disabled(mocks, monkeypatch):
    exchanged = []
    monkeypatch.setattr(
        images, "exchange_acr_refresh_token", lambda *args: exchanged.append(args) or "acr-refresh-token"
    )
    workload(image=None, build=ImageBuildArgs(context="/src", dockerfile="/src/Dockerfile"))

    def check(_):
        registry = mocks.one("azure-native:containerregistry:Registry")
        pull = by_name(mocks.of_type(ROLE), "-acr-pull-0").inputs
        image = mocks.one("docker:index/image:Image").inputs
        login_server = f"{registry.inputs['registryName']}.azurecr.io"
        assert registry.inputs["adminUserEnabled"] is False
        assert pull["roleDefinitionId"].endswith("/roleDefinitions/7f951dda-4ed3-4680-a71d-c19f7ce7b92a")
        assert (pull["principalId"], pull["principalType"], pull["scope"]) == (
            IDENTITY_PRINCIPAL_ID,
            "ServicePrincipal",
            registry.id,
        )
        assert is_rpc_secret(image["registry"]), "registry credentials must be a Pulumi secret"
        assert unwrap_rpc_secret(image["registry"]) == {
            "server": login_server,
            "username": "00000000-0000-0000-0000-000000000000",
            "password": "acr-refresh-token",
        }
        assert exchanged == [(login_server, TENANT_ID, AZURE_CLIENT_TOKEN)]
        for name, document in (("VM", vm_cloud_init(mocks.one(VM))), ("VMSS", vmss_cloud_init(mocks.one(VMSS)))):
            assert f"{login_server}/spotshift@{DIGEST} " in document, name
            assert REGISTRY_LOGIN_SCRIPT in document, name
            assert "acr-refresh-token" not in document and AZURE_CLIENT_TOKEN not in document, name

    return settled().apply(check)


@pulumi.runtime.test
def test_component_outputs_give_the_migration_its_target(mocks):
    component = workload()

    def check(values):
        url, container, account_id, client_id, api_url = values
        assert url.startswith("https://") and url.endswith(".blob.core.windows.net")
        assert container == "spotshift"
        assert account_id == mocks.one(ACCOUNT).id
        assert client_id == IDENTITY_CLIENT_ID
        assert api_url == f"http://{AZURE_API_IP}:8080"

    return pulumi.Output.all(
        settled(),
        component.storage_account_url,
        component.container_name,
        component.storage_account_id,
        component.identity_client_id,
        component.api_url,
    ).apply(lambda values: check(values[1:]))


def test_image_or_build_is_required():
    with pytest.raises(ValueError, match="image or a build"):
        AzureSpotWorkload("spotshift", AzureSpotWorkloadArgs(location="westeurope", ssh_public_key=SSH_KEY))


@pulumi.runtime.test
def test_evicted_workers_are_deleted_while_the_api_vm_keeps_its_policy(mocks):
    workload(eviction_policy="Deallocate")

    def check(_):
        assert mocks.one(VMSS).inputs["virtualMachineProfile"]["evictionPolicy"] == "Delete"
        assert mocks.one(VM).inputs["evictionPolicy"] == "Deallocate"

    return settled().apply(check)


@pulumi.runtime.test
def test_encryption_at_host_can_be_turned_off_for_subscriptions_without_the_feature(mocks):
    workload(encryption_at_host=False)

    def check(_):
        assert mocks.one(VM).inputs["securityProfile"]["encryptionAtHost"] is False
        assert mocks.one(VMSS).inputs["virtualMachineProfile"]["securityProfile"]["encryptionAtHost"] is False

    return settled().apply(check)
