"""GCP network visibility and exposure: subnet flow logs, no external IPs on the Spot workers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel

from ._base import BaselinePolicy, dig, items
from .types import GCP_SUBNETWORK, GCP_TEMPLATE_TYPES


def _flow_logs(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    # Purpose-built subnets (proxy-only, PSC) cannot have flow logs.
    if dig(props, "purpose") not in (None, "PRIVATE"):
        return
    if not dig(props, "logConfig"):
        yield "logConfig is unset: no VPC flow logs"


def _worker_ip(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    for index, interface in enumerate(items(dig(props, "networkInterfaces"))):
        if items(dig(interface, "accessConfigs")) or items(dig(interface, "ipv6AccessConfigs")):
            yield f"networkInterfaces[{index}] gives every instance an external IP; use Cloud NAT for egress"


SUBNET_FLOW_LOGS = BaselinePolicy(
    "subnet-flow-logs",
    "GCP subnets record VPC flow logs.",
    {GCP_SUBNETWORK: _flow_logs},
    enforcement_level=EnforcementLevel.ADVISORY,
    remediation_steps="Keep spotshift:flowLogs true (its cost is in the README).",
)

WORKERS_WITHOUT_PUBLIC_IP = BaselinePolicy(
    "workers-without-public-ip",
    "Instance templates (the Spot workers) give their instances no external IP; egress goes through Cloud NAT.",
    {typ: _worker_ip for typ in GCP_TEMPLATE_TYPES},
    enforcement_level=EnforcementLevel.ADVISORY,
    remediation_steps="Keep spotshift:workerPublicIp false (a documented cost trade-off, see the README).",
)
