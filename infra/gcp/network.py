"""``GcpNetwork``: a custom-mode VPC, one subnet and tag-targeted ingress rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

#: Half the flows, aggregated over 5 minutes: enough to investigate, a fraction of the default log volume.
FLOW_LOG_CONFIG = {"aggregation_interval": "INTERVAL_5_MIN", "flow_sampling": 0.5, "metadata": "INCLUDE_ALL_METADATA"}


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
    flow_logs: bool = True
    """VPC flow logs on the subnet (billed as Cloud Logging ingestion)."""
    cloud_nat: bool = True
    """A Cloud Router + Cloud NAT for the subnet, the egress of VMs without an external IP (the workers)."""


class GcpNetwork(pulumi.ComponentResource):
    """A VPC without auto subnets, one regional subnet and firewall rules for the API and SSH."""

    network_id: pulumi.Output[str]
    subnetwork_id: pulumi.Output[str]
    egress: list[pulumi.Resource]
    """The Cloud NAT (when created): VMs without an external IP need it before they boot."""

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
            log_config=FLOW_LOG_CONFIG if args.flow_logs else None,
            opts=child,
        )
        self.egress = []
        if args.cloud_nat:
            router = gcp.compute.Router(
                f"{name}-router", project=args.project, region=args.region, network=network.id, opts=child
            )
            nat = gcp.compute.RouterNat(
                f"{name}-nat",
                project=args.project,
                region=args.region,
                router=router.name,
                nat_ip_allocate_option="AUTO_ONLY",
                # Only this subnet; VMs with an external IP (the API VM) keep using their own.
                source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
                subnetworks=[{"name": subnet.id, "source_ip_ranges_to_nats": ["ALL_IP_RANGES"]}],
                log_config={"enable": True, "filter": "ERRORS_ONLY"},
                opts=child,
            )
            self.egress.append(nat)
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
