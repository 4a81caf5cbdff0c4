"""``GcpSpotApiVm``: the API on one Spot VM behind a static external IP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.spot import CLOUD_PLATFORM_SCOPE, SHIELDED_VM, UBUNTU_2404_IMAGE, spot_scheduling, vm_metadata


@dataclass
class GcpSpotApiVmArgs:
    """Inputs of :class:`GcpSpotApiVm`."""

    project: pulumi.Input[str]
    """GCP project id."""
    region: pulumi.Input[str]
    """Region of the static IP."""
    zone: pulumi.Input[str]
    """Zone of the VM."""
    subnetwork: pulumi.Input[str]
    """Subnetwork id."""
    service_account_email: pulumi.Input[str]
    """Identity the VM runs as."""
    user_data: pulumi.Input[str]
    """The cloud-init document."""
    tags: Sequence[str]
    """Network tags (the firewall rules target them)."""
    machine_type: pulumi.Input[str] = "e2-standard-2"
    """Machine type."""
    provisioning_model: str = "SPOT"
    """``SPOT`` or ``preemptible``."""
    boot_image: pulumi.Input[str] = UBUNTU_2404_IMAGE
    """Boot image or image family."""
    disk_size_gb: int = 20
    """Boot disk size."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants the workload needs before it boots (bucket IAM, registry reader)."""


class GcpSpotApiVm(pulumi.ComponentResource):
    """A static external IP and a Spot VM that is stopped, not deleted, on preemption."""

    instance: gcp.compute.Instance
    ip_address: pulumi.Output[str]
    instance_name: pulumi.Output[str]

    def __init__(self, name: str, args: GcpSpotApiVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:GcpSpotApiVm", name, None, opts)

        address = gcp.compute.Address(
            f"{name}-ip",
            project=args.project,
            region=args.region,
            address_type="EXTERNAL",
            network_tier="PREMIUM",
            opts=pulumi.ResourceOptions(parent=self),
        )
        instance = gcp.compute.Instance(
            f"{name}-vm",
            project=args.project,
            zone=args.zone,
            machine_type=args.machine_type,
            # STOP keeps the disk and the static IP through a preemption. The VM
            # comes back with `gcloud compute instances start`, or with
            # `pulumi up --refresh`, which sees it stopped and, since the desired
            # status is RUNNING, starts it.
            scheduling=spot_scheduling(args.provisioning_model, "STOP"),
            desired_status="RUNNING",
            boot_disk={
                "auto_delete": True,
                "initialize_params": {"image": args.boot_image, "size": args.disk_size_gb, "type": "pd-balanced"},
            },
            network_interfaces=[
                {
                    "subnetwork": args.subnetwork,
                    "access_configs": [{"nat_ip": address.address, "network_tier": "PREMIUM"}],
                }
            ],
            service_account={"email": args.service_account_email, "scopes": [CLOUD_PLATFORM_SCOPE]},
            shielded_instance_config=SHIELDED_VM,
            metadata=pulumi.Output.from_input(args.user_data).apply(vm_metadata),
            tags=list(args.tags),
            allow_stopping_for_update=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # GCP updates metadata in place, but cloud-init runs its modules
                # once per instance id, so an in-place update would never apply
                # a new document: a changed `user-data` must replace the VM.
                replace_on_changes=["metadata"],
                # The static IP can be attached to one VM at a time, so the old
                # VM goes first (a short API outage while the new one boots).
                delete_before_replace=True,
            ),
        )

        self.instance = instance
        self.ip_address = address.address
        self.instance_name = instance.name
        self.register_outputs({"ip_address": self.ip_address, "instance_name": self.instance_name})
