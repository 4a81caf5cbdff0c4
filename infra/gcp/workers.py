"""``SpotWorkerGroup``: workers in a managed instance group of Spot VMs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra._naming import dns_label
from infra.gcp.spot import CLOUD_PLATFORM_SCOPE, SHIELDED_VM, UBUNTU_2404_IMAGE, spot_scheduling, vm_metadata


@dataclass
class SpotWorkerGroupArgs:
    """Inputs of :class:`SpotWorkerGroup`."""

    project: pulumi.Input[str]
    """GCP project id."""
    zone: pulumi.Input[str]
    """Zone of the group."""
    subnetwork: pulumi.Input[str]
    """Subnetwork id."""
    service_account_email: pulumi.Input[str]
    """Identity the workers run as."""
    user_data: pulumi.Input[str]
    """The cloud-init document."""
    tags: Sequence[str]
    """Network tags."""
    target_size: pulumi.Input[int] = 2
    """Number of workers (0 stops them all)."""
    machine_type: pulumi.Input[str] = "e2-standard-2"
    """Machine type."""
    provisioning_model: str = "SPOT"
    """``SPOT`` or ``preemptible``."""
    boot_image: pulumi.Input[str] = UBUNTU_2404_IMAGE
    """Boot image or image family."""
    disk_size_gb: int = 20
    """Boot disk size."""
    public_ip: bool = False
    """Give each worker an ephemeral external IP; False (the default) sends egress through the subnet's Cloud NAT."""
    wait_for_stable: bool = False
    """Make the update wait until the group is stable (every resize done); the freeze needs it."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants the workload needs before it boots (bucket IAM, registry reader)."""


class SpotWorkerGroup(pulumi.ComponentResource):
    """An instance template and a zonal MIG that rolls every template change out proactively."""

    group: gcp.compute.InstanceGroupManager
    group_name: pulumi.Output[str]
    instance_group: pulumi.Output[str]
    template_self_link: pulumi.Output[str]

    def __init__(self, name: str, args: SpotWorkerGroupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:SpotWorkerGroup", name, None, opts)

        # Instance templates are immutable: any change (a new cloud-init, a new
        # image digest) is a replacement. name_prefix gives the new template a
        # fresh name, so Pulumi creates it first, points the group at it, and
        # deletes the old one only after the group has moved.
        template = gcp.compute.InstanceTemplate(
            f"{name}-template",
            project=args.project,
            name_prefix=dns_label(name, 36) + "-",
            machine_type=args.machine_type,
            # A MIG re-creates deleted workers when capacity returns; a stopped
            # worker would just hold its disk.
            scheduling=spot_scheduling(args.provisioning_model, "DELETE"),
            disks=[
                {
                    "boot": True,
                    "auto_delete": True,
                    "source_image": args.boot_image,
                    "disk_size_gb": args.disk_size_gb,
                    "disk_type": "pd-balanced",
                }
            ],
            # Workers serve nothing: their way out (packages, image pulls) is Cloud NAT, or an
            # ephemeral external IP when public_ip is set. Ingress stays closed either way
            # because no firewall rule targets them.
            network_interfaces=[
                {
                    "subnetwork": args.subnetwork,
                    "access_configs": [{"network_tier": "PREMIUM"}] if args.public_ip else [],
                }
            ],
            service_account={"email": args.service_account_email, "scopes": [CLOUD_PLATFORM_SCOPE]},
            shielded_instance_config=SHIELDED_VM,
            metadata=pulumi.Output.from_input(args.user_data).apply(vm_metadata),
            tags=list(args.tags),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        group = gcp.compute.InstanceGroupManager(
            f"{name}-mig",
            project=args.project,
            zone=args.zone,
            base_instance_name=dns_label(name, 40),
            # self_link_unique names this exact template version, so a replaced
            # template is a change of the group, not a no-op.
            versions=[{"name": "primary", "instance_template": template.self_link_unique}],
            target_size=args.target_size,
            update_policy={
                "type": "PROACTIVE",
                "minimal_action": "REPLACE",
                # Surge one new worker before removing an old one: queue
                # throughput never drops during a rollout.
                "max_surge_fixed": 1,
                "max_unavailable_fixed": 0,
            },
            # The resize API is "marked DONE when the resize actions are scheduled even if the
            # group has not yet added or deleted any instances": only with wait_for_instances does
            # the provider wait until the group is STABLE, i.e. every worker really is gone.
            # Unfrozen updates do not wait, so a Spot stock-out cannot hold a deploy for its timeout.
            wait_for_instances=args.wait_for_stable,
            wait_for_instances_status="STABLE",
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.group = group
        self.group_name = group.name
        self.instance_group = group.instance_group
        self.template_self_link = template.self_link_unique
        self.register_outputs(
            {
                "group_name": self.group_name,
                "instance_group": self.instance_group,
                "template_self_link": self.template_self_link,
            }
        )
