"""Each rule of the pack on hand-built resources: a good one passes, each deliberately bad one is reported."""

from __future__ import annotations

import base64
import copy
import gzip
import json
from typing import Any

import pytest

from policy.spotshift_policy import (
    DATA_PROTECTION_CONFIGURED,
    POLICIES,
    RESOURCE_POLICIES,
    compute,
    data_protection,
    identity,
    ingress,
    login,
    network,
    protection,
    public_access,
    spot,
    storage_account,
    user_data,
)
from policy.spotshift_policy import types as t
from tests.policy.harness import check, stack_resource, stack_violations

#: Split so secret scanners do not take this test for a key.
PRIVATE_KEY = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
ACCOUNT_ID = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/spotshiftdata"
BLOB_CONTRIBUTOR = "/subscriptions/sub/providers/Microsoft.Authorization/roleDefinitions/ba92f5b4-2d11-453d-a403-e96b0029c9fe"
CLEAN_CLOUD_INIT = "#cloud-config\nusers:\n  - name: spotshift\n    lock_passwd: true\nchpasswd:\n  expire: false\nwrite_files: []\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


GCP_SPOT = {"provisioningModel": "SPOT", "preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
GCP_METADATA = {"user-data": CLEAN_CLOUD_INIT, "enable-oslogin": "TRUE"}
AZURE_OS_PROFILE = {
    "adminUsername": "spotshift",
    "customData": b64(CLEAN_CLOUD_INIT),
    "allowExtensionOperations": False,
    "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": []}},
}
AZURE_SECURITY = {"securityType": "TrustedLaunch", "encryptionAtHost": True}

#: One resource of every type the pack inspects, as the baseline wants it (wire names).
GOOD: dict[str, dict[str, Any]] = {
    t.GCP_INSTANCE: {"scheduling": GCP_SPOT, "metadata": GCP_METADATA, "networkInterfaces": [{"accessConfigs": [{}]}]},
    t.GCP_TEMPLATE: {"scheduling": GCP_SPOT, "metadata": GCP_METADATA, "networkInterfaces": [{"accessConfigs": []}]},
    t.GCP_REGION_TEMPLATE: {"scheduling": GCP_SPOT, "metadata": GCP_METADATA, "networkInterfaces": [{}]},
    t.GCP_FIREWALL: {"direction": "INGRESS", "allows": [{"protocol": "tcp", "ports": ["22"]}], "sourceRanges": ["192.0.2.4/32"]},
    t.GCP_SUBNETWORK: {"ipCidrRange": "10.42.0.0/24", "logConfig": {"aggregationInterval": "INTERVAL_5_MIN"}},
    t.GCP_BUCKET: {
        "uniformBucketLevelAccess": True,
        "publicAccessPrevention": "enforced",
        "versioning": {"enabled": True},
        "softDeletePolicy": {"retentionDurationSeconds": 604800},
    },
    t.GCP_BUCKET_IAM_MEMBER: {"bucket": "b", "role": "roles/storage.objectAdmin", "member": "serviceAccount:w@p.iam.gserviceaccount.com"},
    t.GCP_FOLDER_IAM_MEMBER: {"bucket": "b", "managedFolder": "f/", "role": "roles/storage.objectViewer", "member": "user:a@example.com"},
    t.GCP_BUCKET_IAM_BINDING: {"bucket": "b", "role": "roles/storage.objectViewer", "members": ["user:a@example.com"]},
    t.GCP_FOLDER_IAM_BINDING: {"bucket": "b", "managedFolder": "f/", "role": "roles/storage.objectViewer", "members": ["group:g@example.com"]},
    t.GCP_BUCKET_IAM_POLICY: {"bucket": "b", "policyData": json.dumps({"bindings": [{"role": "roles/storage.objectViewer", "members": ["user:a@example.com"]}]})},
    t.GCP_FOLDER_IAM_POLICY: {"bucket": "b", "managedFolder": "f/", "policyData": json.dumps({"bindings": []})},
    **{typ: {"bucket": "b", "entity": "user-a@example.com", "role": "READER"} for typ in t.GCP_ACL_ENTITY_TYPES},
    **{typ: {"bucket": "b", "roleEntities": ["OWNER:project-owners-123"]} for typ in t.GCP_ACL_LIST_TYPES},
    **{typ: {"role": "roles/logging.logWriter", "member": "serviceAccount:w@p.iam.gserviceaccount.com"} for typ in t.GCP_WIDE_IAM_MEMBER},
    **{typ: {"role": "roles/monitoring.metricWriter", "members": ["serviceAccount:w@p.iam.gserviceaccount.com"]} for typ in t.GCP_WIDE_IAM_BINDING},
    **{typ: {"policyData": json.dumps({"bindings": [{"role": "roles/logging.logWriter", "members": ["user:a@example.com"]}]})} for typ in t.GCP_WIDE_IAM_POLICY},
    t.AZURE_VM: {
        "priority": "Spot",
        "evictionPolicy": "Deallocate",
        "billingProfile": {"maxPrice": -1},
        "securityProfile": AZURE_SECURITY,
        "osProfile": AZURE_OS_PROFILE,
    },
    t.AZURE_VMSS: {
        "upgradePolicy": {"mode": "Automatic", "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True}},
        "virtualMachineProfile": {
            "priority": "Spot",
            "evictionPolicy": "Delete",
            "securityProfile": AZURE_SECURITY,
            "osProfile": {key: value for key, value in AZURE_OS_PROFILE.items() if key != "allowExtensionOperations"},
        },
    },
    t.AZURE_ACCOUNT: {
        "accountName": "spotshiftdata",
        "allowBlobPublicAccess": False,
        "minimumTlsVersion": "TLS1_2",
        "enableHttpsTrafficOnly": True,
        "allowSharedKeyAccess": False,
        "networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"iPAddressOrRange": "203.0.113.7"}]},
    },
    t.AZURE_CONTAINER: {"containerName": "spotshift", "publicAccess": "None"},
    t.AZURE_BLOB_SERVICE: {
        "accountName": "spotshiftdata",
        "blobServicesName": "default",
        "deleteRetentionPolicy": {"enabled": True, "days": 7},
        "containerDeleteRetentionPolicy": {"enabled": True, "days": 7},
        "isVersioningEnabled": True,
    },
    t.AZURE_NSG: {
        "securityRules": [
            {"name": "allow-api", "direction": "Inbound", "access": "Allow", "sourceAddressPrefixes": ["203.0.113.0/24"]},
            {"name": "deny-all", "direction": "Inbound", "access": "Deny", "sourceAddressPrefix": "*"},
            {"name": "out", "direction": "Outbound", "access": "Allow", "sourceAddressPrefix": "*"},
        ]
    },
    t.AZURE_NSG_RULE: {"direction": "Inbound", "access": "Allow", "sourceAddressPrefix": "VirtualNetwork"},
    t.AZURE_ROLE_ASSIGNMENT: {"scope": ACCOUNT_ID, "roleDefinitionId": BLOB_CONTRIBUTOR, "principalId": "p"},
}


def changed(typ: str, *path: str | int, to: Any = None, drop: bool = False) -> dict[str, Any]:
    """GOOD[typ] with the value at ``path`` set to ``to`` (or removed)."""
    props = copy.deepcopy(GOOD[typ])
    target: Any = props
    for step in path[:-1]:
        target = target[step]
    if drop:
        del target[path[-1]]
    else:
        target[path[-1]] = to
    return props


def with_custom_data(typ: str, text: str) -> dict[str, Any]:
    """An Azure VM or scale set whose custom data is ``text`` (base64, as the API takes it)."""
    if typ == t.AZURE_VMSS:
        return changed(typ, "virtualMachineProfile", "osProfile", "customData", to=b64(text))
    return changed(typ, "osProfile", "customData", to=b64(text))


#: (policy, type, bad props, a fragment the violation message must hold).
BAD: list[tuple[Any, str, dict[str, Any], str]] = [
    # spot-everywhere
    *[(spot.SPOT_EVERYWHERE, typ, changed(typ, "scheduling", "provisioningModel", to="STANDARD"), "'SPOT'") for typ in t.GCP_VM_TYPES],
    (spot.SPOT_EVERYWHERE, t.GCP_INSTANCE, changed(t.GCP_INSTANCE, "scheduling", drop=True), "provisioningModel is unset"),
    (spot.SPOT_EVERYWHERE, t.AZURE_VM, changed(t.AZURE_VM, "priority", to="Regular"), "'Regular', not 'Spot'"),
    (spot.SPOT_EVERYWHERE, t.AZURE_VMSS, changed(t.AZURE_VMSS, "virtualMachineProfile", "priority", drop=True), "priority is unset"),
    (spot.SPOT_EVERYWHERE, t.AZURE_VMSS, changed(t.AZURE_VMSS, "virtualMachineProfile", "evictionPolicy", to="Deallocate"), "evicts with 'Delete'"),
    # no-public-storage
    (public_access.NO_PUBLIC_STORAGE, t.GCP_BUCKET, changed(t.GCP_BUCKET, "publicAccessPrevention", to="inherited"), "not 'enforced'"),
    (public_access.NO_PUBLIC_STORAGE, t.GCP_BUCKET, changed(t.GCP_BUCKET, "uniformBucketLevelAccess", drop=True), "uniformBucketLevelAccess is unset"),
    (public_access.NO_PUBLIC_STORAGE, t.GCP_BUCKET_IAM_MEMBER, changed(t.GCP_BUCKET_IAM_MEMBER, "member", to="allUsers"), "to allUsers"),
    (public_access.NO_PUBLIC_STORAGE, t.GCP_FOLDER_IAM_MEMBER, changed(t.GCP_FOLDER_IAM_MEMBER, "member", to="allAuthenticatedUsers"), "allAuthenticatedUsers"),
    *[(public_access.NO_PUBLIC_STORAGE, typ, changed(typ, "members", to=["user:a@example.com", "allUsers"]), "to allUsers") for typ in (t.GCP_BUCKET_IAM_BINDING, t.GCP_FOLDER_IAM_BINDING)],
    *[
        (public_access.NO_PUBLIC_STORAGE, typ, changed(typ, "policyData", to=json.dumps({"bindings": [{"role": "roles/storage.objectViewer", "members": ["allUsers"]}]})), "allUsers")
        for typ in (t.GCP_BUCKET_IAM_POLICY, t.GCP_FOLDER_IAM_POLICY)
    ],
    *[(public_access.NO_PUBLIC_STORAGE, typ, changed(typ, "entity", to="allUsers"), "ACL entry for allUsers") for typ in t.GCP_ACL_ENTITY_TYPES],
    *[(public_access.NO_PUBLIC_STORAGE, typ, changed(typ, "roleEntities", to=["READER:allUsers"]), "READER:allUsers") for typ in t.GCP_ACL_LIST_TYPES],
    (public_access.NO_PUBLIC_STORAGE, t.GCP_ACL_LIST_TYPES[0], changed(t.GCP_ACL_LIST_TYPES[0], "predefinedAcl", to="publicRead"), "publicRead"),
    (public_access.NO_PUBLIC_STORAGE, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "allowBlobPublicAccess", drop=True), "allowBlobPublicAccess is unset"),
    (public_access.NO_PUBLIC_STORAGE, t.AZURE_CONTAINER, changed(t.AZURE_CONTAINER, "publicAccess", to="Blob"), "'Blob'"),
    # tls12-https-only
    (storage_account.TLS_HTTPS_ONLY, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "minimumTlsVersion", to="TLS1_0"), "'TLS1_0', not TLS1_2"),
    (storage_account.TLS_HTTPS_ONLY, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "minimumTlsVersion", drop=True), "minimumTlsVersion is unset"),
    (storage_account.TLS_HTTPS_ONLY, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "enableHttpsTrafficOnly", to=False), "enableHttpsTrafficOnly is False"),
    # shared-keys-off
    (storage_account.SHARED_KEYS_OFF, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "allowSharedKeyAccess", to=True), "allowSharedKeyAccess is True"),
    (storage_account.SHARED_KEYS_OFF, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "allowSharedKeyAccess", drop=True), "allowSharedKeyAccess is unset"),
    # storage-deny-by-default
    (storage_account.STORAGE_DENY_BY_DEFAULT, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "networkRuleSet", drop=True), "defaultAction is unset"),
    (storage_account.STORAGE_DENY_BY_DEFAULT, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "networkRuleSet", "defaultAction", to="Allow"), "'Allow', not 'Deny'"),
    # data-stores-protected (the option, not a prop: the harness passes protect=True to every other case)
    *[(protection.DATA_STORES_PROTECTED, typ, GOOD[typ], "declared without protect") for typ in (t.AZURE_ACCOUNT, t.AZURE_CONTAINER)],
    # no-password-login
    (login.NO_PASSWORD_LOGIN, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", "linuxConfiguration", "disablePasswordAuthentication", to=False), "disablePasswordAuthentication is False"),
    (login.NO_PASSWORD_LOGIN, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", "adminPassword", to="hunter2-Hunter2"), "adminPassword is set"),
    (login.NO_PASSWORD_LOGIN, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", drop=True), "osProfile is unset"),
    (login.NO_PASSWORD_LOGIN, t.AZURE_VMSS, changed(t.AZURE_VMSS, "virtualMachineProfile", "osProfile", "linuxConfiguration", drop=True), "virtualMachineProfile.osProfile.linuxConfiguration.disablePasswordAuthentication is unset"),
    # no-world-open-ingress
    (ingress.NO_WORLD_OPEN_INGRESS, t.GCP_FIREWALL, changed(t.GCP_FIREWALL, "sourceRanges", to=["0.0.0.0/0"]), "tcp:22 from 0.0.0.0/0"),
    (ingress.NO_WORLD_OPEN_INGRESS, t.GCP_FIREWALL, changed(t.GCP_FIREWALL, "sourceRanges", drop=True), "no source, which GCP reads as 0.0.0.0/0"),
    (ingress.NO_WORLD_OPEN_INGRESS, t.AZURE_NSG, changed(t.AZURE_NSG, "securityRules", 0, "sourceAddressPrefixes", to=["203.0.113.0/24", "Internet"]), "(allow-api) allows port * from Internet"),
    (ingress.NO_WORLD_OPEN_INGRESS, t.AZURE_NSG_RULE, {**GOOD[t.AZURE_NSG_RULE], "sourceAddressPrefix": "*", "destinationPortRange": "22"}, "allows port 22 from *"),
    (ingress.NO_WORLD_OPEN_INGRESS, t.AZURE_NSG_RULE, {**GOOD[t.AZURE_NSG_RULE], "sourceAddressPrefix": "0.0.0.0/0"}, "from 0.0.0.0/0"),
    # identities-scoped-to-one-store
    *[(identity.IDENTITIES_SCOPED, typ, changed(typ, "role", to="roles/storage.objectAdmin"), "on every bucket") for typ in t.GCP_WIDE_IAM_MEMBER],
    *[(identity.IDENTITIES_SCOPED, typ, changed(typ, "role", to="roles/editor"), "roles/editor to serviceAccount:w@p") for typ in t.GCP_WIDE_IAM_BINDING],
    *[
        (identity.IDENTITIES_SCOPED, typ, changed(typ, "policyData", to=json.dumps({"bindings": [{"role": "roles/storage.admin", "members": ["serviceAccount:w@p"]}]})), "grants roles/storage.admin")
        for typ in t.GCP_WIDE_IAM_POLICY
    ],
    *[(identity.IDENTITIES_SCOPED, typ, changed(typ, "role", to="roles/storage.admin"), "administers the bucket") for typ in (t.GCP_BUCKET_IAM_MEMBER, t.GCP_BUCKET_IAM_BINDING)],
    (identity.IDENTITIES_SCOPED, t.AZURE_ROLE_ASSIGNMENT, changed(t.AZURE_ROLE_ASSIGNMENT, "scope", to="/subscriptions/sub/resourceGroups/rg"), "not one resource"),
    (identity.IDENTITIES_SCOPED, t.AZURE_ROLE_ASSIGNMENT, changed(t.AZURE_ROLE_ASSIGNMENT, "scope", to="/subscriptions/sub"), "not one resource"),
    (
        identity.IDENTITIES_SCOPED,
        t.AZURE_ROLE_ASSIGNMENT,
        changed(t.AZURE_ROLE_ASSIGNMENT, "scope", to="/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/acr"),
        "Storage Blob Data Contributor is scoped to",
    ),
    # data-protection-on
    (data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, changed(t.AZURE_BLOB_SERVICE, "deleteRetentionPolicy", "enabled", to=False), "deleteRetentionPolicy.enabled is False"),
    (data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, changed(t.AZURE_BLOB_SERVICE, "containerDeleteRetentionPolicy", drop=True), "containerDeleteRetentionPolicy.enabled is unset"),
    (data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, changed(t.AZURE_BLOB_SERVICE, "deleteRetentionPolicy", "days", to=2), "days is 2, fewer than 7"),
    (data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, changed(t.AZURE_BLOB_SERVICE, "isVersioningEnabled", to=False), "isVersioningEnabled is False"),
    (data_protection.DATA_PROTECTION_ON, t.GCP_BUCKET, changed(t.GCP_BUCKET, "versioning", "enabled", to=False), "versioning.enabled is False"),
    (data_protection.DATA_PROTECTION_ON, t.GCP_BUCKET, changed(t.GCP_BUCKET, "softDeletePolicy", drop=True), "state the soft-delete retention"),
    # encryption-at-host
    (compute.ENCRYPTION_AT_HOST, t.AZURE_VM, changed(t.AZURE_VM, "securityProfile", "encryptionAtHost", drop=True), "encryptionAtHost is unset"),
    (compute.ENCRYPTION_AT_HOST, t.AZURE_VMSS, changed(t.AZURE_VMSS, "virtualMachineProfile", "securityProfile", "encryptionAtHost", to=False), "virtualMachineProfile.securityProfile.encryptionAtHost is False"),
    # no-vm-extension-operations
    (compute.NO_VM_EXTENSION_OPERATIONS, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", "allowExtensionOperations", drop=True), "allowExtensionOperations is unset"),
    # subnet-flow-logs
    (network.SUBNET_FLOW_LOGS, t.GCP_SUBNETWORK, changed(t.GCP_SUBNETWORK, "logConfig", drop=True), "no VPC flow logs"),
    # workers-without-public-ip
    *[(network.WORKERS_WITHOUT_PUBLIC_IP, typ, changed(typ, "networkInterfaces", to=[{"accessConfigs": [{"networkTier": "PREMIUM"}]}]), "external IP") for typ in t.GCP_TEMPLATE_TYPES],
    # no-secrets-in-user-data
    *[(user_data.NO_SECRETS_IN_USER_DATA, typ, changed(typ, "metadata", "user-data", to=f"write_files:\n  - content: |\n    {PRIVATE_KEY}"), "metadata['user-data'] holds what looks like a private key") for typ in t.GCP_VM_TYPES],
    (user_data.NO_SECRETS_IN_USER_DATA, t.GCP_INSTANCE, {**GOOD[t.GCP_INSTANCE], "metadataStartupScript": "export AZURE_CLIENT_SECRET=abc123"}, "a client secret"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.GCP_TEMPLATE, changed(t.GCP_TEMPLATE, "metadata", "startup-script", to="curl -H 'Authorization: Bearer ya29.a0AfH6SMBexampletoken'"), "Google OAuth access token"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VM, with_custom_data(t.AZURE_VM, "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc=="), "osProfile.customData holds what looks like a storage account key"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VMSS, with_custom_data(t.AZURE_VMSS, "URL=https://a.blob.core.windows.net/c?sv=2024-01-01&sp=r&sig=abcDEF%3D"), "a SAS signature"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VMSS, with_custom_data(t.AZURE_VMSS, "BlobEndpoint=https://a;SharedAccessSignature=sv=x"), "SharedAccessSignature"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VM, {**GOOD[t.AZURE_VM], "userData": b64("DB_PASSWORD=correct-horse")}, "userData holds what looks like a password"),
    (user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", "customData", to=base64.b64encode(gzip.compress(b'{"type": "service_account", "private_key": "x"}')).decode()), "private_key"),
]


def _case_id(case: tuple[Any, str, dict[str, Any], str]) -> str:
    policy, typ, _, fragment = case
    return f"{policy.name}-{typ.rsplit(':', 1)[-1]}-{fragment[:30]}"


@pytest.mark.parametrize(("policy", "typ"), [(p, typ) for p in RESOURCE_POLICIES for typ in sorted(p.resource_types)],
                         ids=lambda value: getattr(value, "name", value))
def test_a_resource_that_meets_the_baseline_is_not_reported(policy, typ):
    assert check(policy, typ, GOOD[typ], protect=True) == []


@pytest.mark.parametrize(("policy", "typ", "props", "fragment"), BAD, ids=[_case_id(case) for case in BAD])
def test_a_deliberately_bad_resource_is_reported(policy, typ, props, fragment):
    found = check(policy, typ, props, protect=policy is not protection.DATA_STORES_PROTECTED)

    assert any(fragment in message for message in found), f"{policy.name} on {typ}: {found}"
    assert all(message.startswith(f"{typ} 'subject': ") for message in found), found


def test_every_rule_and_every_type_it_inspects_has_a_bad_case():
    covered = {(policy.name, typ) for policy, typ, _, _ in BAD}

    missing = [(policy.name, typ) for policy in RESOURCE_POLICIES for typ in policy.resource_types if (policy.name, typ) not in covered]

    assert missing == []
    assert {policy.name for policy in POLICIES} == {policy.name for policy, *_ in BAD} | {DATA_PROTECTION_CONFIGURED.name}


def test_rules_ignore_types_they_do_not_inspect():
    bucket = changed(t.GCP_BUCKET, "publicAccessPrevention", to="inherited")

    assert check(spot.SPOT_EVERYWHERE, t.GCP_BUCKET, bucket) == []
    assert check(login.NO_PASSWORD_LOGIN, t.GCP_INSTANCE, {}) == []


def test_violations_name_the_kind_of_secret_never_its_value():
    found = check(user_data.NO_SECRETS_IN_USER_DATA, t.AZURE_VM, with_custom_data(t.AZURE_VM, "API_PASSWORD=s3cr3t-value"))

    password = check(login.NO_PASSWORD_LOGIN, t.AZURE_VM, changed(t.AZURE_VM, "osProfile", "adminPassword", to="s3cr3t-value"))

    assert found and password
    assert all("s3cr3t-value" not in message for message in found + password)


def test_cloud_init_user_locks_and_boolean_settings_are_not_taken_for_passwords():
    text = CLEAN_CLOUD_INIT + "ssh_pwauth: false\npassword_auth: false\n"

    assert user_data.secrets_in(text) == []


def test_legacy_preemptible_passes_only_when_the_policy_config_allows_it():
    legacy = changed(t.GCP_INSTANCE, "scheduling", "provisioningModel", drop=True)

    assert check(spot.SPOT_EVERYWHERE, t.GCP_INSTANCE, legacy) != []
    assert check(spot.SPOT_EVERYWHERE, t.GCP_INSTANCE, legacy, config={"allowLegacyPreemptible": True}) == []


def test_minimum_retention_follows_the_policy_config():
    three_days = changed(t.AZURE_BLOB_SERVICE, "deleteRetentionPolicy", "days", to=3)
    three_days["containerDeleteRetentionPolicy"]["days"] = 3

    assert check(data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, three_days) != []
    assert check(data_protection.DATA_PROTECTION_ON, t.AZURE_BLOB_SERVICE, three_days, config={"minRetentionDays": 3}) == []


def test_a_storage_account_without_blob_service_properties_is_reported():
    account = stack_resource(t.AZURE_ACCOUNT, "data-account", GOOD[t.AZURE_ACCOUNT])
    other = stack_resource(t.AZURE_ACCOUNT, "other-account", {**GOOD[t.AZURE_ACCOUNT], "accountName": "otheraccount"})
    by_dependency = stack_resource(t.AZURE_BLOB_SERVICE, "by-dependency", {**GOOD[t.AZURE_BLOB_SERVICE], "accountName": "x"}, [account])
    by_name = stack_resource(t.AZURE_BLOB_SERVICE, "by-name", GOOD[t.AZURE_BLOB_SERVICE])

    alone = stack_violations(DATA_PROTECTION_CONFIGURED, [account, other])
    served = stack_violations(DATA_PROTECTION_CONFIGURED, [account, by_dependency])
    named = stack_violations(DATA_PROTECTION_CONFIGURED, [account, other, by_name])

    assert len(alone) == 2 and "'data-account' has no azure-native:storage:BlobServiceProperties" in alone[0]
    assert served == []
    assert named == [f"storage account 'other-account' has no {t.AZURE_BLOB_SERVICE}: soft delete and versioning are off"]


def test_an_unknown_value_in_preview_is_left_to_the_analyzer():
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

    with pytest.raises(UnknownValueError):
        check(identity.IDENTITIES_SCOPED, t.AZURE_ROLE_ASSIGNMENT, changed(t.AZURE_ROLE_ASSIGNMENT, "scope", to=UNKNOWN_STRING_VALUE))

