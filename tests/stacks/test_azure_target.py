"""The azure-target program under mocks: resources, exports, the migration hand-off and config validation."""

from __future__ import annotations

import base64
from collections import Counter

import pulumi
import pytest
import yaml

from stacks import azure_target
from stacks._config import ConfigError
from tests.infra.pulumi_mocks import AZURE_API_IP, DEPLOYER_OBJECT_ID, IDENTITY_CLIENT_ID, IDENTITY_PRINCIPAL_ID
from tests.stacks.conftest import AZURE_CONFIG, SSH_KEY, resolved

#: What a pasted private key starts with (split so secret scanners do not take this test for a key).
PRIVATE_KEY_HEADER = "-----BEGIN OPENSSH " + "PRIVATE KEY-----"
VM = "azure-native:compute:VirtualMachine"
VMSS = "azure-native:compute:VirtualMachineScaleSet"
ACCOUNT = "azure-native:storage:StorageAccount"
ROLE = "azure-native:authorization:RoleAssignment"
NSG = "azure-native:network:NetworkSecurityGroup"

DEFAULT_RESOURCES = Counter(
    {
        "azure-native:resources:ResourceGroup": 1,
        "azure-native:network:ApplicationSecurityGroup": 1,
        NSG: 1,
        "azure-native:network:VirtualNetwork": 1,
        "azure-native:network:Subnet": 1,
        "azure-native:managedidentity:UserAssignedIdentity": 1,
        ACCOUNT: 1,
        "azure-native:storage:BlobContainer": 1,
        "azure-native:storage:BlobServiceProperties": 1,
        "azure-native:storage:ManagementPolicy": 1,
        ROLE: 2,
        "azure-native:network:PublicIPAddress": 1,
        "azure-native:network:NetworkInterface": 1,
        VM: 1,
        VMSS: 1,
    }
)
COMPONENTS = Counter(
    {
        "spotshift:azure:AzureSpotWorkload": 1,
        "spotshift:azure:AzureNetwork": 1,
        "spotshift:azure:AzureBlobStorage": 1,
        "spotshift:azure:AzureSpotApiVm": 1,
        "spotshift:azure:AzureSpotWorkerScaleSet": 1,
    }
)
EXPORTS = {
    "api_url",
    "api_ip",
    "resource_group_name",
    "storage_account_name",
    "storage_account_url",
    "container_name",
    "identity_client_id",
    "migration_stage",
}


def cloud_init(custom_data: str) -> str:
    return base64.b64decode(custom_data).decode()


def env(document: str) -> dict[str, str]:
    files = {entry["path"]: entry["content"] for entry in yaml.safe_load(document)["write_files"]}
    return dict(line.split("=", 1) for line in files["/etc/spotshift/spotshift.env"].splitlines())


@pulumi.runtime.test
def test_default_stack_creates_exactly_these_resources(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(_):
        assert mocks.type_counts() == DEFAULT_RESOURCES
        components = Counter(r.type for r in mocks.registrations if r.type.startswith("spotshift:"))
        assert components == COMPONENTS
        assert sum(DEFAULT_RESOURCES.values()) == 16

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_build_adds_a_registry_pull_grant_and_image(mocks, configure, exports, monkeypatch):
    from infra import images

    monkeypatch.setattr(images, "exchange_acr_refresh_token", lambda *args: "acr-refresh-token")
    configure(AZURE_CONFIG, buildImage=True, image=None, grantDeployerDataAccess=False)

    outputs = azure_target.main()

    def check(_):
        assert mocks.type_counts() == DEFAULT_RESOURCES + Counter(
            {"azure-native:containerregistry:Registry": 1, "docker:index/image:Image": 1}
        ), "the ACR pull grant replaces the deployer's blob grant in the count"
        assert mocks.one("azure-native:containerregistry:Registry").inputs["adminUserEnabled"] is False

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_stack_exports_the_target_values(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(values):
        account_name = mocks.one(ACCOUNT).inputs["accountName"]
        assert set(exports) == set(values) == EXPORTS
        assert values["api_ip"] == AZURE_API_IP
        assert values["api_url"] == f"http://{AZURE_API_IP}:8080"
        assert values["resource_group_name"] == mocks.one(ACCOUNT).inputs["resourceGroupName"]
        assert values["storage_account_name"] == account_name
        assert values["storage_account_url"] == f"https://{account_name}.blob.core.windows.net"
        assert values["container_name"] == "spotshift"
        assert values["identity_client_id"] == IDENTITY_CLIENT_ID
        assert values["migration_stage"] == "provision"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_security_and_spot_baseline_of_the_stack(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(values):
        account = mocks.one(ACCOUNT)
        inputs = account.inputs
        assert (inputs["allowBlobPublicAccess"], inputs["minimumTlsVersion"], inputs["enableHttpsTrafficOnly"]) == (
            False,
            "TLS1_2",
            True,
        )
        assert inputs["allowSharedKeyAccess"] is False
        assert mocks.one("azure-native:storage:BlobContainer").inputs["publicAccess"] == "None"
        grants = {registration.inputs["principalId"]: registration.inputs for registration in mocks.of_type(ROLE)}
        assert set(grants) == {IDENTITY_PRINCIPAL_ID, DEPLOYER_OBJECT_ID}
        for grant in grants.values():
            assert grant["scope"] == account.id
            assert grant["roleDefinitionId"].endswith("/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe")
        assert grants[IDENTITY_PRINCIPAL_ID]["principalType"] == "ServicePrincipal"
        assert mocks.one(NSG).inputs.get("securityRules", []) == [], "API and SSH are closed by default"
        vm = mocks.one(VM).inputs
        profile = mocks.one(VMSS).inputs["virtualMachineProfile"]
        for name, spot, eviction in (("VM", vm, "Deallocate"), ("VMSS", profile, "Delete")):
            assert (spot["priority"], spot["evictionPolicy"], spot["billingProfile"]) == (
                "Spot",
                eviction,
                {"maxPrice": -1},
            ), name
            assert spot["securityProfile"]["encryptionAtHost"] is True, name
            assert spot["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True, name
            document = cloud_init(spot["osProfile"]["customData"])
            assert env(document)["AZURE_STORAGE_ACCOUNT_URL"] == values["storage_account_url"], name
            assert env(document)["AZURE_CLIENT_ID"] == values["identity_client_id"], name
            for marker in ("accountkey=", "sig=", "-----begin", "password", "sharedaccesssignature"):
                assert marker not in document.lower(), f"{name}: {marker}"
        assert mocks.one(VMSS).inputs["spotRestorePolicy"] == {"enabled": True}

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_config_reaches_the_resources(mocks, configure, exports):
    configure(
        AZURE_CONFIG,
        evictionPolicy="delete",
        vmSize="Standard_D4as_v5",
        workerCount=0,
        allowedCidrs=["203.0.113.0/24"],
        sshSourceCidr="192.0.2.4",
        allowSharedKeyAccess=True,
        grantDeployerDataAccess=False,
        **{"azure-native:location": "North Europe"},
    )

    outputs = azure_target.main()

    def check(_):
        vm = mocks.one(VM).inputs
        vmss = mocks.one(VMSS).inputs
        assert vm["evictionPolicy"] == vmss["virtualMachineProfile"]["evictionPolicy"] == "Delete"
        assert vm["hardwareProfile"]["vmSize"] == vmss["sku"]["name"] == "Standard_D4as_v5"
        assert vmss["sku"]["capacity"] == 0
        assert vm["location"] == "northeurope"
        rules = {rule["name"]: rule for rule in mocks.one(NSG).inputs["securityRules"]}
        assert rules["allow-api"]["sourceAddressPrefixes"] == ["203.0.113.0/24"]
        assert rules["allow-ssh"]["sourceAddressPrefix"] == "192.0.2.4/32"
        assert mocks.one(ACCOUNT).inputs["allowSharedKeyAccess"] is True
        assert [grant.inputs["principalId"] for grant in mocks.of_type(ROLE)] == [IDENTITY_PRINCIPAL_ID]

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_ci_deployer_is_granted_as_a_service_principal(mocks, configure, exports):
    configure(AZURE_CONFIG, deployerPrincipalType="serviceprincipal")

    outputs = azure_target.main()

    def check(_):
        deployer = next(r for r in mocks.of_type(ROLE) if r.inputs["principalId"] == DEPLOYER_OBJECT_ID)
        assert deployer.inputs["principalType"] == "ServicePrincipal"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_changed_cloud_init_replaces_vm_and_scale_set(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(_):
        vm, vmss = mocks.one(VM), mocks.one(VMSS)
        assert vm.options["replaceOnChanges"] == ["osProfile", "securityProfile"]
        assert vm.options["deleteBeforeReplace"] is True
        assert vmss.options["replaceOnChanges"] == [
            "virtualMachineProfile.osProfile",
            "virtualMachineProfile.evictionPolicy",
            "virtualMachineProfile.securityProfile",
        ]
        assert vmss.inputs["upgradePolicy"] == {"mode": "Automatic"}

    return resolved(outputs).apply(check)


def test_migration_target_hands_over_what_the_migration_needs(mocks, configure, exports, monkeypatch):
    configure(AZURE_CONFIG, sourceStack="acme/spotshift/gcp-source")
    seen = {}

    def capture(config, target):
        seen["config"], seen["target"] = config, target
        return {}

    monkeypatch.setattr(azure_target, "add_migration_stage", capture)

    @pulumi.runtime.test
    def deploy():
        outputs = azure_target.main()
        target = seen["target"]
        return pulumi.Output.all(
            resolved(outputs),
            target.storage_account_url,
            target.container_name,
            target.storage_account_id,
        )

    deploy()

    target = seen["target"]
    assert seen["config"].source_stack == "acme/spotshift/gcp-source"
    assert {grant._name for grant in target.data_access_grants} == {
        "spotshift-storage-workload-blob-data",
        "spotshift-storage-deployer-blob-data",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"evictionPolicy": "Stop"}, r"spotshift:evictionPolicy must be one of Deallocate, Delete \(got 'Stop'\)"),
        ({"migrationStage": "rollback"}, r"spotshift:migrationStage must be one of provision, sync, cutover \(got 'rollback'\)"),
        ({"migrationStage": "sync"}, r"spotshift:sourceStack is required when spotshift:migrationStage is sync"),
        ({"migrationStage": "cutover", "sourceStack": "a/b/c", "syncRound": "two"},
         r"spotshift:syncRound must be an integer from 0 to 1000000 \(got 'two'\)"),
        ({"allowedCidrs": ["0.0.0.0/40"]}, r"spotshift:allowedCidrs must hold IPv4 CIDRs"),
        ({"allowedCidrs": "not json ["}, r"spotshift:allowedCidrs must hold IPv4 CIDRs"),
        ({"workerCount": -1}, r"spotshift:workerCount must be an integer from 0 to 100 "),
        ({"workerCount": 101}, r"spotshift:workerCount must be an integer from 0 to 100 "),
        ({"sshPublicKey": None}, r"spotshift:sshPublicKey is required"),
        ({"sshPublicKey": PRIVATE_KEY_HEADER}, r"spotshift:sshPublicKey must be one OpenSSH public key"),
        ({"deployerPrincipalType": "Robot"}, r"spotshift:deployerPrincipalType must be one of User, ServicePrincipal, Group"),
        ({"sourceStack": "gcp-source"}, r"spotshift:sourceStack must be a fully qualified stack name"),
        ({"grantDeployerDataAccess": "maybe"}, r"spotshift:grantDeployerDataAccess must be true or false"),
        ({"azure-native:location": "west europe!"}, r"azure-native:location must be an Azure region"),
        ({"image": None}, r"spotshift:image is required"),
        ({"storageAccountName": "My-Account"}, r"spotshift:storageAccountName must be 3 to 24 lowercase letters"),
        ({"storageAllowedCidrs": ["10.1.2.3"]}, r"spotshift:storageAllowedCidrs takes public IPv4 addresses only"),
        ({"storageAllowedCidrs": ["laptop"]}, r"spotshift:storageAllowedCidrs must hold IPv4 CIDRs"),
        ({"blobSoftDeleteDays": 0}, r"spotshift:blobSoftDeleteDays must be an integer from 1 to 365"),
        ({"encryptionAtHost": "sure"}, r"spotshift:encryptionAtHost must be true or false"),
        ({"migrationStage": "sync", "sourceStack": "acme/spotshift/gcp-source"},
         r"spotshift:storageAllowedCidrs is required when spotshift:migrationStage is sync"),
    ],
)
def test_bad_config_fails_with_one_message_naming_the_key(mocks, configure, overrides, message):
    configure(AZURE_CONFIG, **overrides)

    with pytest.raises(ConfigError, match=message):
        azure_target.load_config()


def test_cutover_without_a_source_stack_fails_before_any_resource_is_created(mocks, configure, exports):
    configure(AZURE_CONFIG, migrationStage="cutover")

    @pulumi.runtime.test
    def deploy():
        with pytest.raises(ConfigError, match="spotshift:sourceStack is required"):
            azure_target.main()
        return pulumi.Output.from_input(None)

    deploy()

    assert mocks.registrations == []
    assert exports == {}


def test_defaults_are_safe(mocks, configure):
    configure(AZURE_CONFIG)

    config = azure_target.load_config()

    assert config.allowed_cidrs == [] and config.ssh_source_cidr is None
    assert (config.eviction_policy, config.migration_stage, config.worker_count) == ("Deallocate", "provision", 2)
    assert config.allow_shared_key_access is False
    assert config.grant_deployer_data_access is True
    assert config.deployer_principal_type == "User"
    assert config.ssh_public_key == SSH_KEY
    assert config.source_stack is None
    assert config.encryption_at_host is True
    assert (config.storage_account_name, config.storage_allowed_cidrs) == (None, [])
    assert (config.blob_soft_delete_days, config.noncurrent_version_days) == (7, 7)
    assert config.protect_storage is True


# --- Cutover: the late-write check's input ------------------------------------

SOURCE_STACK = "acme/spotshift/gcp-source"
DYNAMIC = "pulumi-python:dynamic/spotshift:MigrationRun"


def run_stage(mocks, configure, stage: str, **source_outputs) -> dict:
    """Run azure-target at ``stage`` against a source stack exporting ``source_outputs``."""
    mocks.stack_outputs[SOURCE_STACK] = {"bucket_name": "spotshift-state-4f2a", "project": "acme-prod",
                                         **source_outputs}
    configure(AZURE_CONFIG, migrationStage=stage, sourceStack=SOURCE_STACK, storageAllowedCidrs=["203.0.113.7"])
    values: dict = {}

    @pulumi.runtime.test
    def deploy():
        return resolved(azure_target.main()).apply(values.update)

    deploy()
    return values


def test_cutover_hands_the_source_freeze_marker_to_the_strict_round(mocks, configure):
    run_stage(mocks, configure, "cutover", frozen=True, freeze_marker="spotshift-freeze/marker.json")

    copy = mocks.one(DYNAMIC).inputs
    assert copy["strict"] is True
    assert copy["freeze_marker"] == "spotshift-freeze/marker.json"


def test_sync_rounds_do_not_check_write_times(mocks, configure):
    run_stage(mocks, configure, "sync", frozen=False)

    assert "freeze_marker" not in mocks.one(DYNAMIC).inputs


def test_cutover_is_refused_when_the_frozen_source_exports_no_marker(mocks, configure, expected_config_errors):
    with pytest.raises(ConfigError, match=r"source stack acme/spotshift/gcp-source exports no freeze_marker"):
        run_stage(mocks, configure, "cutover", frozen=True)

    assert mocks.of_type(DYNAMIC) == [], "no copy round may start without the marker"



# --- Data safety of the storage account -----------------------------------------

CONTAINER = "azure-native:storage:BlobContainer"
BLOB_SERVICE = "azure-native:storage:BlobServiceProperties"
LIFECYCLE = "azure-native:storage:ManagementPolicy"
SUBNET = "azure-native:network:Subnet"


@pulumi.runtime.test
def test_account_and_container_are_protected_and_the_name_sticks(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(_):
        account, container = mocks.one(ACCOUNT), mocks.one(CONTAINER)
        assert account.options["protect"] is True, "a replacement would delete every migrated blob"
        assert container.options["protect"] is True
        assert account.options["ignoreChanges"] == ["accountName"], "a stack/project rename must not rename it"
        assert account.options["retainOnDelete"] is False

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_blob_and_container_soft_delete_and_versioning_are_on(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(values):
        service = mocks.one(BLOB_SERVICE).inputs
        assert service["accountName"] == values["storage_account_name"]
        assert service["blobServicesName"] == "default"
        assert service["deleteRetentionPolicy"] == {"enabled": True, "days": 7}
        assert service["containerDeleteRetentionPolicy"] == {"enabled": True, "days": 7}
        assert service["isVersioningEnabled"] is True
        rule = mocks.one(LIFECYCLE).inputs["policy"]["rules"][0]
        assert rule["definition"]["actions"] == {"version": {"delete": {"daysAfterCreationGreaterThan": 7}}}
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_retention_follows_config(mocks, configure, exports):
    configure(AZURE_CONFIG, blobSoftDeleteDays=30, noncurrentVersionDays=14)

    outputs = azure_target.main()

    def check(_):
        service = mocks.one(BLOB_SERVICE).inputs
        assert service["deleteRetentionPolicy"]["days"] == service["containerDeleteRetentionPolicy"]["days"] == 30
        rule = mocks.one(LIFECYCLE).inputs["policy"]["rules"][0]
        assert rule["definition"]["actions"]["version"]["delete"]["daysAfterCreationGreaterThan"] == 14

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_account_denies_every_network_but_the_subnet_and_the_deployer(mocks, configure, exports):
    configure(AZURE_CONFIG, storageAllowedCidrs=["198.51.100.7", "203.0.113.0/30", "192.0.2.4/31"])

    outputs = azure_target.main()

    def check(_):
        subnet = mocks.one(SUBNET)
        rules = mocks.one(ACCOUNT).inputs["networkRuleSet"]
        assert rules["defaultAction"] == "Deny"
        assert rules["bypass"] == "AzureServices"
        assert rules["virtualNetworkRules"] == [{"virtualNetworkResourceId": subnet.id, "action": "Allow"}]
        # Azure takes /31 and /32 only as single addresses.
        assert [rule["iPAddressOrRange"] for rule in rules["ipRules"]] == [
            "198.51.100.7", "203.0.113.0/30", "192.0.2.4", "192.0.2.5"
        ]
        assert {rule["action"] for rule in rules["ipRules"]} == {"Allow"}
        assert subnet.inputs["serviceEndpoints"] == [{"service": "Microsoft.Storage"}]

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_default_account_firewall_admits_only_the_subnet(mocks, configure, exports):
    configure(AZURE_CONFIG)

    outputs = azure_target.main()

    def check(_):
        rules = mocks.one(ACCOUNT).inputs["networkRuleSet"]
        assert rules["defaultAction"] == "Deny" and rules.get("ipRules") in (None, [])
        assert len(rules["virtualNetworkRules"]) == 1

    return resolved(outputs).apply(check)


@pulumi.runtime.test
def test_protection_is_lifted_only_by_an_explicit_key(mocks, configure, exports):
    configure(AZURE_CONFIG, protectStorage=False)

    outputs = azure_target.main()

    def check(_):
        assert mocks.one(ACCOUNT).options["protect"] is False
        assert mocks.one(CONTAINER).options["protect"] is False
        assert mocks.one(ACCOUNT).options["ignoreChanges"] == ["accountName"]

    return resolved(outputs).apply(check)


def account_name_in_stack(stack: str, configure, **overrides) -> str:
    """The storage account name the program asks for when the stack is called ``stack``."""
    from tests.infra import pulumi_mocks

    mocks = pulumi_mocks.install(stack=stack)
    configure(AZURE_CONFIG, **overrides)

    @pulumi.runtime.test
    def deploy():
        return resolved(azure_target.main())

    deploy()
    return mocks.one(ACCOUNT).inputs["accountName"]


def test_pinned_account_name_survives_a_stack_rename(mocks, configure, exports):
    before = account_name_in_stack("azure-target", configure, storageAccountName="spotshiftprod01")
    after = account_name_in_stack("azure-target-renamed", configure, storageAccountName="spotshiftprod01")

    assert before == after == "spotshiftprod01"


def test_derived_account_name_is_what_existing_stacks_already_have(mocks, configure, exports):
    # Unpinned, the name is derived as before (existing stacks keep their accounts); a rename would
    # derive another one, which ignore_changes on accountName keeps from reaching the account.
    before = account_name_in_stack("azure-target", configure)
    renamed = account_name_in_stack("azure-target-renamed", configure)

    from infra._naming import alnum_name
    from tests.infra.pulumi_mocks import PROJECT, SUBSCRIPTION_ID

    assert before == alnum_name("spotshift", f"storage/{SUBSCRIPTION_ID}/{PROJECT}/azure-target/spotshift", 24)
    assert before != renamed
