"""``AzureSpotWorkerScaleSet``: workers in a Spot VM scale set that restores evicted capacity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as azure_native

from infra._naming import dns_label
from infra.azure.spot import SPOT_MAX_PRICE, UBUNTU_2404_IMAGE, custom_data, linux_ssh_only, security_profile

#: Evicted workers are deleted: with Deallocate they would keep billed disks and quota and come
#: back only through best-effort Try & Restore; deleted, the scale set replaces them.
WORKER_EVICTION_POLICY = "Delete"


@dataclass
class AzureSpotWorkerScaleSetArgs:
    """Inputs of :class:`AzureSpotWorkerScaleSet`."""

    resource_group_name: pulumi.Input[str]
    """Resource group."""
    location: pulumi.Input[str]
    """Azure region."""
    subnet_id: pulumi.Input[str]
    """Subnet of the instances."""
    identity_id: pulumi.Input[str]
    """Resource id of the user-assigned identity the workers run as."""
    cloud_init: pulumi.Input[str]
    """The cloud-init document (plain text; encoded here)."""
    ssh_public_key: pulumi.Input[str]
    """OpenSSH public key of the admin user (password login is disabled)."""
    capacity: pulumi.Input[int] = 2
    """Number of workers."""
    vm_size: pulumi.Input[str] = "Standard_D2as_v5"
    """VM size."""
    encryption_at_host: bool = True
    """Encrypt temp disks and disk caches on the host."""
    admin_username: str = "spotshift"
    """Admin user for SSH."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants the workload needs before it boots (blob data role, AcrPull)."""


class AzureSpotWorkerScaleSet(pulumi.ComponentResource):
    """A Uniform Spot scale set: max price -1, Try & Restore on, automatic model upgrades.

    Uniform, not Flexible: Azure accepts ``spotRestorePolicy`` only for Uniform scale sets.
    """

    scale_set_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: AzureSpotWorkerScaleSetArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spotshift:azure:AzureSpotWorkerScaleSet", name, None, opts)

        scale_set = azure_native.compute.VirtualMachineScaleSet(
            f"{name}-vmss",
            resource_group_name=args.resource_group_name,
            location=args.location,
            orchestration_mode="Uniform",
            sku={"name": args.vm_size, "tier": "Standard", "capacity": args.capacity},
            # Extra Spot instances would be created only to be deleted again.
            overprovision=False,
            # Re-creates evicted instances when Spot capacity returns.
            spot_restore_policy={"enabled": True},
            # Model changes other than cloud-init (size, image) reach every instance. Automatic OS
            # image upgrades stay off on purpose: they need a health signal (a load balancer probe
            # or the Application Health extension) and the workers serve no port to probe, and a
            # reimage is announced neither as Preempt nor as Terminate, so the worker could not
            # drain. Instances boot the `latest` image whenever they are created (every eviction
            # with the Delete policy) and Ubuntu's unattended-upgrades installs security updates.
            upgrade_policy={"mode": "Automatic"},
            identity={"type": "UserAssigned", "user_assigned_identities": [args.identity_id]},
            virtual_machine_profile={
                "priority": "Spot",
                "eviction_policy": WORKER_EVICTION_POLICY,
                "billing_profile": {"max_price": SPOT_MAX_PRICE},
                "security_profile": security_profile(args.encryption_at_host),
                # Scale-in and replacement announce themselves as a Terminate
                # Scheduled Event: the worker drains, then approves it (or Azure
                # goes ahead after 5 minutes, the shortest timeout it allows).
                "scheduled_events_profile": {
                    "terminate_notification_profile": {"enable": True, "not_before_timeout": "PT5M"}
                },
                "storage_profile": {
                    "image_reference": UBUNTU_2404_IMAGE,
                    "os_disk": {
                        "create_option": "FromImage",
                        "managed_disk": {"storage_account_type": "StandardSSD_LRS"},
                    },
                },
                "os_profile": {
                    "computer_name_prefix": dns_label(name, 20),
                    "admin_username": args.admin_username,
                    "custom_data": pulumi.Output.from_input(args.cloud_init).apply(custom_data),
                    "linux_configuration": pulumi.Output.from_input(args.ssh_public_key).apply(
                        lambda key: linux_ssh_only(args.admin_username, key)
                    ),
                },
                "network_profile": {
                    "network_interface_configurations": [
                        {
                            "name": "primary",
                            "primary": True,
                            "ip_configurations": [
                                {
                                    "name": "primary",
                                    "primary": True,
                                    # No public IP: workers serve nothing and reach
                                    # out through the subnet's outbound access.
                                    "subnet": {"id": args.subnet_id},
                                }
                            ],
                        }
                    ]
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # An upgrade to a new custom_data does not re-run cloud-init on
                # existing instances (and the admin user and SSH keys cannot
                # change), so any osProfile change replaces the scale set. The new
                # set is created before the old one is deleted (names are
                # auto-generated); the old workers get a Terminate event and drain.
                # Azure changes neither the eviction policy nor encryption at host of running
                # instances, so those replace the scale set too.
                replace_on_changes=[
                    "virtualMachineProfile.osProfile",
                    "virtualMachineProfile.evictionPolicy",
                    "virtualMachineProfile.securityProfile",
                ],
            ),
        )

        self.scale_set_name = scale_set.name
        self.register_outputs({"scale_set_name": self.scale_set_name})
