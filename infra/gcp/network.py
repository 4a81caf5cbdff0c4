"""``GcpNetwork``: a custom-mode VPC, one subnet and tag-targeted ingress rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp


@dataclass
class GcpNetworkArgs:
    """Inputs of :class:`GcpNetwork`."""

    project: pulumi.Input[str]
    """GCP project id."""
    region: pulumi.Input[str]
    """Region of the subnet."""
    api_port: int
    """TCP port of the API."""
    api_tag: str
    """Network tag carried by the API VM; the API rule targets it."""
    ssh_tags: Sequence[str]
    """Network tags the SSH rule targets (when SSH is open)."""
    allowed_cidrs: Sequence[str] = field(default_factory=list)
    """Sources allowed to reach the API port; empty means no API rule at all."""
    ssh_source_cidr: str | None = None
    """Source allowed to reach port 22; None means no SSH rule at all."""
    subnet_cidr: str = "10.42.0.0/24"
    """Private range of the subnet."""


class GcpNetwork(pulumi.ComponentResource):
    """A VPC without auto subnets, one regional subnet and firewall rules for the API and SSH."""

    network_id: pulumi.Output[str]
    subnetwork_id: pulumi.Output[str]

    def __init__(self, name: str, args: GcpNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:GcpNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        network = gcp.compute.Network(
            f"{name}-vpc",
            project=args.project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            project=args.project,
            region=args.region,
            network=network.id,
            ip_cidr_range=args.subnet_cidr,
            # Lets the VMs reach Google APIs (GCS, Artifact Registry) on internal routes.
            private_ip_google_access=True,
            opts=child,
        )
        # A custom VPC denies all ingress by default. A rule with no source ranges
        # would mean 0.0.0.0/0 to GCP, so an empty allow-list creates no rule.
        if args.allowed_cidrs:
            gcp.compute.Firewall(
                f"{name}-allow-api",
                project=args.project,
                network=network.id,
                direction="INGRESS",
                allows=[{"protocol": "tcp", "ports": [str(args.api_port)]}],
                source_ranges=list(args.allowed_cidrs),
                target_tags=[args.api_tag],
                opts=child,
            )
        if args.ssh_source_cidr:
            gcp.compute.Firewall(
                f"{name}-allow-ssh",
                project=args.project,
                network=network.id,
                direction="INGRESS",
                allows=[{"protocol": "tcp", "ports": ["22"]}],
                source_ranges=[args.ssh_source_cidr],
                target_tags=list(args.ssh_tags),
                opts=child,
            )

        self.network_id = network.id
        self.subnetwork_id = subnet.id
        self.register_outputs({"network_id": self.network_id, "subnetwork_id": self.subnetwork_id})
