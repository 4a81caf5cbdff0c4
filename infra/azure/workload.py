"""``AzureSpotWorkload``: the whole target deployment — network, storage, identity, API VM and workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azure_native as azure_native

from infra._naming import alnum_name
from infra.azure.api_vm import AzureSpotApiVm, AzureSpotApiVmArgs
from infra.azure.network import AzureNetwork, AzureNetworkArgs
from infra.azure.registry import AcrImage, AcrImageArgs
from infra.azure.storage import AzureBlobStorage, AzureBlobStorageArgs, BlobDataContributor
from infra.azure.workers import AzureSpotWorkerScaleSet, AzureSpotWorkerScaleSetArgs
from infra.cloud_init import CloudInitArgs, render_cloud_init
from infra.images import ImageBuildArgs


@dataclass
class AzureSpotWorkloadArgs:
    """Inputs of :class:`AzureSpotWorkload` (plain values where they decide which resources exist)."""

    location: str
    """Azure region of every resource."""
    ssh_public_key: pulumi.Input[str]
    """OpenSSH public key of the admin user; password login is disabled."""
    image: pulumi.Input[str] | None = None
    """Container image to run; ignored when ``build`` is set."""
    build: ImageBuildArgs | None = None
    """Build the image and push it to a new Azure Container Registry instead of using ``image``."""
    vm_size: pulumi.Input[str] = "Standard_D2as_v5"
    """Size of the API VM and the workers (B-series cannot be Spot)."""
    worker_count: int = 2
    """Workers in the scale set."""
    api_port: int = 8080
    """TCP port of the API."""
    allowed_cidrs: Sequence[str] = field(default_factory=list)
    """Sources allowed to reach the API port; empty keeps it closed."""
    ssh_source_cidr: str | None = None
    """Source allowed to reach SSH; None keeps it closed."""
    eviction_policy: str = "Deallocate"
    """What happens to the evicted API VM, ``Deallocate`` or ``Delete`` (workers are always deleted)."""
    encryption_at_host: bool = True
    """Encryption at host on the API VM and the workers (a subscription feature must be registered)."""
    storage_account_name: str | None = None
    """The storage account's name; None derives one from subscription, project, stack and component."""
    storage_allowed_ips: Sequence[str] = field(default_factory=list)
    """Public IPv4 addresses/CIDRs the storage firewall admits (the deployer, for the migration)."""
    protect_storage: bool = True
    """Protect the storage account and container against replacement and deletion."""
    blob_soft_delete_days: int = 7
    """Days a deleted blob or container stays restorable."""
    noncurrent_version_days: int = 7
    """Days a previous blob version is kept."""
    allow_shared_key_access: bool = False
    """Allow account keys and SAS on the storage account."""
    grant_deployer_data_access: bool = True
    """Give the deploying principal Storage Blob Data Contributor (for the migration's writes)."""
    deployer_principal_type: str = "User"
    """Kind of the deploying principal: ``User``, ``ServicePrincipal`` (CI) or ``Group``."""
    container_name: str = "spotshift"
    """Blob container holding the workload's objects."""
    admin_username: str = "spotshift"
    """Admin user on the VMs."""
    lease_seconds: float = 60
    """LEASE_SECONDS of the workload."""
    worker_grace_seconds: float = 20
    """WORKER_GRACE_SECONDS of the workload (must end before the worker's stop timeout)."""


class AzureSpotWorkload(pulumi.ComponentResource):
    """The spotshift workload on Azure Spot VMs with its state in one private blob container."""

    resource_group_name: pulumi.Output[str]
    storage_account_name: pulumi.Output[str]
    storage_account_id: pulumi.Output[str]
    storage_account_url: pulumi.Output[str]
    container_name: pulumi.Output[str]
    identity_client_id: pulumi.Output[str]
    identity_principal_id: pulumi.Output[str]
    api_ip: pulumi.Output[str]
    api_url: pulumi.Output[str]
    worker_scale_set: pulumi.Output[str]
    image: pulumi.Output[str]
    data_access_grants: list[azure_native.authorization.RoleAssignment]
    """The blob-data role assignments (workload identity, deployer): ``depends_on`` for anything that writes blobs."""

    def __init__(
        self, name: str, args: AzureSpotWorkloadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spotshift:azure:AzureSpotWorkload", name, None, opts)
        if args.build is None and not args.image:
            raise ValueError("AzureSpotWorkloadArgs needs an image or a build")
        child = pulumi.ResourceOptions(parent=self)
        client = azure_native.authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        # Storage account and registry names share one namespace across Azure;
        # a hash of subscription, project, stack and component keeps them unique and stable.
        unique = pulumi.Output.concat(
            client.subscription_id, "/", pulumi.get_project(), "/", pulumi.get_stack(), "/", name
        )

        group = azure_native.resources.ResourceGroup(f"{name}-rg", location=args.location, opts=child)
        where = {"resource_group_name": group.name, "location": args.location}
        network = AzureNetwork(
            f"{name}-net",
            AzureNetworkArgs(
                **where,
                api_port=args.api_port,
                allowed_cidrs=args.allowed_cidrs,
                ssh_source_cidr=args.ssh_source_cidr,
            ),
            opts=child,
        )
        identity = azure_native.managedidentity.UserAssignedIdentity(f"{name}-identity", **where, opts=child)

        contributors = [
            # principal_type: the identity is seconds old and Entra ID may not
            # have replicated it yet; the hint skips the lookup that would fail.
            BlobDataContributor("workload", identity.principal_id, "ServicePrincipal"),
        ]
        if args.grant_deployer_data_access:
            # getClientConfig does not say whether the deployer is a user or a
            # service principal (CI), and Azure checks the type: it comes from config.
            contributors.append(BlobDataContributor("deployer", client.object_id, args.deployer_principal_type))
        storage = AzureBlobStorage(
            f"{name}-storage",
            AzureBlobStorageArgs(
                **where,
                # Derived once; the account ignores later changes of it (see AzureBlobStorage), so a
                # renamed stack keeps its account. A pinned name wins.
                account_name=args.storage_account_name
                or unique.apply(lambda text: alnum_name(name, f"storage/{text}", 24)),
                subscription_id=client.subscription_id,
                container_name=args.container_name,
                allow_shared_key_access=args.allow_shared_key_access,
                contributors=contributors,
                subnet_ids=[network.subnet_id],
                allowed_ips=list(args.storage_allowed_ips),
                soft_delete_days=args.blob_soft_delete_days,
                protect=args.protect_storage,
                noncurrent_version_days=args.noncurrent_version_days,
            ),
            opts=child,
        )
        grants: list[pulumi.Resource] = list(storage.role_assignments)

        registry_server: pulumi.Input[str] | None = None
        if args.build is not None:
            built = AcrImage(
                f"{name}-registry",
                AcrImageArgs(
                    **where,
                    registry_name=unique.apply(lambda text: alnum_name(name, f"registry/{text}", 50)),
                    subscription_id=client.subscription_id,
                    tenant_id=client.tenant_id,
                    build=args.build,
                    pull_principal_ids=[identity.principal_id],
                ),
                opts=child,
            )
            image = built.image_ref
            registry_server = built.registry_server
            grants += built.pull_grants
        else:
            image = pulumi.Output.from_input(args.image)

        def cloud_init(role: str) -> pulumi.Output[str]:
            return render_cloud_init(
                CloudInitArgs(
                    cloud="azure",
                    role=role,  # type: ignore[arg-type]
                    image=image,
                    api_port=args.api_port,
                    lease_seconds=args.lease_seconds,
                    worker_grace_seconds=args.worker_grace_seconds,
                    azure_storage_account_url=storage.account_url,
                    azure_container=storage.container_name,
                    azure_client_id=identity.client_id,
                    registry_server=registry_server,
                )
            )

        api = AzureSpotApiVm(
            f"{name}-api",
            AzureSpotApiVmArgs(
                **where,
                subnet_id=network.subnet_id,
                api_security_group_id=network.api_security_group_id,
                identity_id=identity.id,
                cloud_init=cloud_init("api"),
                ssh_public_key=args.ssh_public_key,
                vm_size=args.vm_size,
                eviction_policy=args.eviction_policy,
                encryption_at_host=args.encryption_at_host,
                admin_username=args.admin_username,
                depends_on=grants,
            ),
            opts=child,
        )
        workers = AzureSpotWorkerScaleSet(
            f"{name}-workers",
            AzureSpotWorkerScaleSetArgs(
                **where,
                subnet_id=network.subnet_id,
                identity_id=identity.id,
                cloud_init=cloud_init("worker"),
                ssh_public_key=args.ssh_public_key,
                capacity=args.worker_count,
                vm_size=args.vm_size,
                encryption_at_host=args.encryption_at_host,
                admin_username=args.admin_username,
                depends_on=grants,
            ),
            opts=child,
        )

        self.resource_group_name = group.name
        self.storage_account_name = storage.account_name
        self.storage_account_id = storage.account_id
        self.storage_account_url = storage.account_url
        self.container_name = storage.container_name
        self.identity_client_id = identity.client_id
        self.identity_principal_id = identity.principal_id
        self.api_ip = api.ip_address
        self.api_url = pulumi.Output.concat("http://", api.ip_address, ":", str(args.api_port))
        self.worker_scale_set = workers.scale_set_name
        self.image = image
        self.data_access_grants = list(storage.role_assignments)
        self.register_outputs(
            {
                "resource_group_name": self.resource_group_name,
                "storage_account_name": self.storage_account_name,
                "storage_account_id": self.storage_account_id,
                "storage_account_url": self.storage_account_url,
                "container_name": self.container_name,
                "identity_client_id": self.identity_client_id,
                "identity_principal_id": self.identity_principal_id,
                "api_ip": self.api_ip,
                "api_url": self.api_url,
                "worker_scale_set": self.worker_scale_set,
                "image": self.image,
            }
        )
