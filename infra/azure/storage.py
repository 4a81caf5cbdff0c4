"""``AzureBlobStorage``: a locked-down StorageV2 account, one private container and data-plane grants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azure_native as azure_native

from infra.azure.roles import STORAGE_BLOB_DATA_CONTRIBUTOR, role_definition_id


@dataclass
class BlobDataContributor:
    """A principal granted "Storage Blob Data Contributor" on the account."""

    key: str
    """Short name for the role assignment resource (``workload``, ``deployer``)."""
    principal_id: pulumi.Input[str]
    """Object id of the principal."""
    principal_type: str
    """``User``, ``Group`` or ``ServicePrincipal``; a new managed identity must say
    ``ServicePrincipal`` or Azure may answer PrincipalNotFound while Entra ID replicates."""


@dataclass
class AzureBlobStorageArgs:
    """Inputs of :class:`AzureBlobStorage`."""

    resource_group_name: pulumi.Input[str]
    """Resource group."""
    location: pulumi.Input[str]
    """Azure region."""
    account_name: pulumi.Input[str]
    """Globally unique account name (3-24 lowercase letters and digits)."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definition."""
    container_name: str = "spotshift"
    """The container that holds every object of the workload."""
    allow_shared_key_access: bool = False
    """Allow account keys and SAS; off, all data access goes through Entra ID."""
    contributors: Sequence[BlobDataContributor] = field(default_factory=list)
    """Principals granted data access, scoped to this account only."""
    subnet_ids: Sequence[pulumi.Input[str]] = field(default_factory=list)
    """Subnets (with a Microsoft.Storage service endpoint) admitted by the account's firewall."""
    allowed_ips: Sequence[str] = field(default_factory=list)
    """Public IPv4 addresses or CIDRs admitted by the firewall (the deployer, for the migration)."""
    soft_delete_days: int = 7
    """Days a deleted blob or container stays restorable."""
    noncurrent_version_days: int = 7
    """Days a previous blob version is kept before lifecycle management deletes it."""
    protect: bool = True
    """``protect`` the account and container: no replacement, no deletion (lift: False, ``pulumi up``)."""


def ip_rules(allowed: Sequence[str]) -> list[dict[str, str]]:
    """The firewall's IP rules: Azure takes CIDRs down to /30, single addresses for /31 and /32."""
    import ipaddress

    rules: list[dict[str, str]] = []
    for cidr in allowed:
        network = ipaddress.ip_network(cidr)
        if network.prefixlen >= 31:
            rules += [{"i_p_address_or_range": str(address), "action": "Allow"} for address in network]
        else:
            rules.append({"i_p_address_or_range": str(network), "action": "Allow"})
    return rules


def _version_cleanup(days: int) -> dict:
    """Lifecycle rule deleting previous blob versions: the queue overwrites its documents all the time."""
    return {
        "rules": [
            {
                "name": "deleteoldversions",
                "type": "Lifecycle",
                "enabled": True,
                "definition": {
                    "filters": {"blob_types": ["blockBlob"]},
                    "actions": {"version": {"delete": {"days_after_creation_greater_than": days}}},
                },
            }
        ]
    }


class AzureBlobStorage(pulumi.ComponentResource):
    """StorageV2 with TLS 1.2+, HTTPS only, no public blobs, no shared keys by default.

    After cutover the account holds the only copy of the data, so the account and its container
    are ``protect``-ed (no replacement, no deletion, not even by ``pulumi destroy``), blob and
    container soft delete and versioning are on, and the account's name, once created, no longer
    follows the stack or project name (``ignore_changes``).
    """

    account_name: pulumi.Output[str]
    account_id: pulumi.Output[str]
    account_url: pulumi.Output[str]
    container_name: pulumi.Output[str]
    role_assignments: list[azure_native.authorization.RoleAssignment]

    def __init__(self, name: str, args: AzureBlobStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:azure:AzureBlobStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        account = azure_native.storage.StorageAccount(
            f"{name}-account",
            resource_group_name=args.resource_group_name,
            location=args.location,
            account_name=args.account_name,
            kind="StorageV2",
            sku={"name": "Standard_LRS"},
            access_tier="Hot",
            allow_blob_public_access=False,
            minimum_tls_version="TLS1_2",
            enable_https_traffic_only=True,
            allow_shared_key_access=args.allow_shared_key_access,
            default_to_o_auth_authentication=True,
            allow_cross_tenant_replication=False,
            # Deny by default: the workload's subnet comes in through its service endpoint, the
            # deployer (the migration's writes) through an IP rule; trusted Azure services
            # (monitoring, backup) keep their documented bypass.
            network_rule_set={
                "default_action": "Deny",
                "bypass": "AzureServices",
                "ip_rules": ip_rules(args.allowed_ips),
                "virtual_network_rules": [
                    {"virtual_network_resource_id": subnet_id, "action": "Allow"} for subnet_id in args.subnet_ids
                ],
            },
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    # A name change is a replacement: create a new empty account, then delete the old
                    # one with every blob. The first name sticks (a stack or project rename must not
                    # move the data), and protect refuses any replacement or deletion outright.
                    ignore_changes=["accountName"],
                    protect=args.protect,
                ),
            ),
        )
        data_protection = azure_native.storage.BlobServiceProperties(
            f"{name}-blob-service",
            resource_group_name=args.resource_group_name,
            account_name=account.name,
            blob_services_name="default",
            delete_retention_policy={"enabled": True, "days": args.soft_delete_days},
            container_delete_retention_policy={"enabled": True, "days": args.soft_delete_days},
            is_versioning_enabled=True,
            opts=child,
        )
        azure_native.storage.ManagementPolicy(
            f"{name}-lifecycle",
            resource_group_name=args.resource_group_name,
            account_name=account.name,
            management_policy_name="default",
            policy=_version_cleanup(args.noncurrent_version_days),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[data_protection])),
        )
        container = azure_native.storage.BlobContainer(
            f"{name}-container",
            resource_group_name=args.resource_group_name,
            account_name=account.name,
            container_name=args.container_name,
            public_access="None",
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=args.protect)),
        )
        contributor_role = role_definition_id(args.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR)
        self.role_assignments = [
            azure_native.authorization.RoleAssignment(
                f"{name}-{contributor.key}-blob-data",
                principal_id=contributor.principal_id,
                principal_type=contributor.principal_type,
                role_definition_id=contributor_role,
                scope=account.id,
                # Azure keeps one assignment per principal, role and scope and cannot
                # update one in place: a replacement must delete the old one first.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
            )
            for contributor in args.contributors
        ]

        self.account_name = account.name
        self.account_id = account.id
        # The provider reports the endpoint with a trailing slash; the workload and
        # the migration expect https://<account>.blob.core.windows.net.
        self.account_url = account.primary_endpoints.apply(lambda endpoints: endpoints.blob.rstrip("/"))
        self.container_name = container.name
        self.register_outputs(
            {
                "account_name": self.account_name,
                "account_id": self.account_id,
                "account_url": self.account_url,
                "container_name": self.container_name,
            }
        )
