"""``AzureNetwork``: a VNet with one subnet and an NSG that mirrors the GCP firewall rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_azure_native as azure_native


@dataclass
class AzureNetworkArgs:
    """Inputs of :class:`AzureNetwork`."""

    resource_group_name: pulumi.Input[str]
    """Resource group."""
    location: pulumi.Input[str]
    """Azure region."""
    api_port: int
    """TCP port of the API."""
    allowed_cidrs: Sequence[str] = field(default_factory=list)
    """Sources allowed to reach the API port; empty means no API rule (closed)."""
    ssh_source_cidr: str | None = None
    """Source allowed to reach SSH; None means no SSH rule (closed)."""
    address_space: str = "10.42.0.0/16"
    """VNet range."""
    subnet_prefix: str = "10.42.1.0/24"
    """Subnet range."""


class AzureNetwork(pulumi.ComponentResource):
    """VNet, a separate Subnet resource, an NSG on the subnet and an ASG that marks the API VM."""

    subnet_id: pulumi.Output[str]
    api_security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: AzureNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:azure:AzureNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        where = {"resource_group_name": args.resource_group_name, "location": args.location}

        # The ASG plays the part of GCP's network tag: the API rule reaches the API VM's NIC only.
        api_asg = azure_native.network.ApplicationSecurityGroup(f"{name}-api-asg", **where, opts=child)
        # Azure's default rules already deny inbound Internet traffic; only
        # these allows are added, and an empty allow-list adds no rule at all.
        rules: list[dict[str, Any]] = []
        if args.allowed_cidrs:
            rules.append(
                {
                    "name": "allow-api",
                    "priority": 100,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "source_address_prefixes": list(args.allowed_cidrs),
                    "source_port_range": "*",
                    "destination_application_security_groups": [{"id": api_asg.id}],
                    "destination_port_range": str(args.api_port),
                }
            )
        if args.ssh_source_cidr:
            rules.append(
                {
                    "name": "allow-ssh",
                    "priority": 110,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "source_address_prefix": args.ssh_source_cidr,
                    "source_port_range": "*",
                    "destination_address_prefix": "VirtualNetwork",
                    "destination_port_range": "22",
                }
            )
        nsg = azure_native.network.NetworkSecurityGroup(f"{name}-nsg", **where, security_rules=rules, opts=child)
        # No inline `subnets` here: the Subnet below is its own resource, and
        # mixing the two makes each update fight the other.
        vnet = azure_native.network.VirtualNetwork(
            f"{name}-vnet", **where, address_space={"address_prefixes": [args.address_space]}, opts=child
        )
        subnet = azure_native.network.Subnet(
            f"{name}-subnet",
            resource_group_name=args.resource_group_name,
            virtual_network_name=vnet.name,
            address_prefix=args.subnet_prefix,
            network_security_group={"id": nsg.id},
            # The workers have no public IP and need outbound access for packages
            # and image pulls. Azure makes new subnets private by default from
            # 2026 (https://learn.microsoft.com/azure/virtual-network/ip-services/default-outbound-access),
            # so it is asked for explicitly; a NAT gateway is the alternative and
            # costs more per month than the Spot workers themselves.
            default_outbound_access=True,
            # The storage account denies every network but this subnet (and the deployer's
            # address): a service endpoint carries the VMs' requests with the subnet's identity.
            service_endpoints=[{"service": "Microsoft.Storage"}],
            opts=child,
        )

        self.subnet_id = subnet.id
        self.api_security_group_id = api_asg.id
        self.register_outputs({"subnet_id": self.subnet_id, "api_security_group_id": self.api_security_group_id})
