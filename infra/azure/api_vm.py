"""``AzureSpotApiVm``: the API on one Spot VM behind a static Standard public IP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native

from infra._naming import dns_label
from infra.azure.spot import SPOT_MAX_PRICE, UBUNTU_2404_IMAGE, custom_data, linux_ssh_only, security_profile


@dataclass
class AzureSpotApiVmArgs:
    """Inputs of :class:`AzureSpotApiVm`."""

    resource_group_name: pulumi.Input[str]
    """Resource group."""
    location: pulumi.Input[str]
    """Azure region."""
    subnet_id: pulumi.Input[str]
    """Subnet of the NIC."""
    api_security_group_id: pulumi.Input[str]
    """Application security group the NSG's API rule targets."""
    identity_id: pulumi.Input[str]
    """Resource id of the user-assigned identity the VM runs as."""
    cloud_init: pulumi.Input[str]
    """The cloud-init document (plain text; encoded here)."""
    ssh_public_key: pulumi.Input[str]
    """OpenSSH public key of the admin user (password login is disabled)."""
    vm_size: pulumi.Input[str] = "Standard_D2as_v5"
    """VM size."""
    eviction_policy: str = "Deallocate"
    """``Deallocate`` or ``Delete``."""
    encryption_at_host: bool = True
    """Encrypt temp disk and OS/data disk caches on the host."""
    admin_username: str = "spotshift"
    """Admin user for SSH."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants the workload needs before it boots (blob data role, AcrPull)."""


class AzureSpotApiVm(pulumi.ComponentResource):
    """A static public IP, a NIC in the API security group, and a Spot VM with a managed identity."""

    ip_address: pulumi.Output[str]
    vm_name: pulumi.Output[str]

    def __init__(self, name: str, args: AzureSpotApiVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:azure:AzureSpotApiVm", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        where = {"resource_group_name": args.resource_group_name, "location": args.location}

        ip = azure_native.network.PublicIPAddress(
            f"{name}-ip",
            **where,
            sku={"name": "Standard", "tier": "Regional"},
            public_ip_allocation_method="Static",
            public_ip_address_version="IPv4",
            opts=child,
        )
        nic = azure_native.network.NetworkInterface(
            f"{name}-nic",
            **where,
            ip_configurations=[
                {
                    "name": "primary",
                    "primary": True,
                    "subnet": {"id": args.subnet_id},
                    "private_ip_allocation_method": "Dynamic",
                    "public_ip_address": {"id": ip.id},
                    "application_security_groups": [{"id": args.api_security_group_id}],
                }
            ],
            opts=child,
        )
        vm = azure_native.compute.VirtualMachine(
            f"{name}-vm",
            **where,
            hardware_profile={"vm_size": args.vm_size},
            priority="Spot",
            eviction_policy=args.eviction_policy,
            billing_profile={"max_price": SPOT_MAX_PRICE},
            identity={"type": "UserAssigned", "user_assigned_identities": [args.identity_id]},
            security_profile=security_profile(args.encryption_at_host),
            storage_profile={
                "image_reference": UBUNTU_2404_IMAGE,
                # Delete the OS disk with the VM, so a replacement leaves no orphan disk.
                "os_disk": {
                    "create_option": "FromImage",
                    "delete_option": "Delete",
                    "managed_disk": {"storage_account_type": "StandardSSD_LRS"},
                },
            },
            os_profile={
                "computer_name": dns_label(name, 63),
                "admin_username": args.admin_username,
                # Nothing installs VM extensions here; refusing them closes a way to run code as root.
                "allow_extension_operations": False,
                "custom_data": pulumi.Output.from_input(args.cloud_init).apply(custom_data),
                "linux_configuration": pulumi.Output.from_input(args.ssh_public_key).apply(
                    lambda key: linux_ssh_only(args.admin_username, key)
                ),
            },
            network_profile={"network_interfaces": [{"id": nic.id, "primary": True, "delete_option": "Detach"}]},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # Azure refuses to change custom_data, the admin user or its SSH
                # keys on an existing VM (PropertyChangeNotAllowed) and azure-native
                # would try an update, so any change under osProfile replaces the
                # VM. The path uses the engine's (camelCase) names.
                # Encryption at host can only change on a deallocated VM: replaced as well.
                replace_on_changes=["osProfile", "securityProfile"],
                # The NIC (and its static IP) belongs to one VM at a time.
                delete_before_replace=True,
            ),
        )

        self.ip_address = ip.ip_address.apply(lambda address: address or "")
        self.vm_name = vm.name
        self.register_outputs({"ip_address": self.ip_address, "vm_name": self.vm_name})
