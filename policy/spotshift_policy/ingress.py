"""No SSH or API port open to the whole internet: GCP firewall rules and Azure NSG rules name their sources."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, items
from .types import AZURE_NSG, AZURE_NSG_RULE, GCP_FIREWALL

#: Sources that mean "anywhere" (GCP ranges; Azure prefixes and service tags, compared case-insensitively).
GCP_WORLD = frozenset({"0.0.0.0/0", "::/0"})
AZURE_WORLD = frozenset({"*", "0.0.0.0/0", "0.0.0.0", "::/0", "internet", "any"})


def _ports(allows: list[Any]) -> str:
    ports = [f"{dig(allow, 'protocol')}:{','.join(items(dig(allow, 'ports'))) or 'all'}" for allow in allows]
    return " ".join(ports) or "all"


def _firewall(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if (dig(props, "direction") or "INGRESS") != "INGRESS" or dig(props, "disabled") is True:
        return
    allows = items(dig(props, "allows"))
    if not allows:
        return
    ranges = items(dig(props, "sourceRanges"))
    world = sorted(GCP_WORLD.intersection(ranges))
    if world:
        yield f"allows {_ports(allows)} from {', '.join(world)}"
    # GCP reads an ingress rule with no source at all as 0.0.0.0/0.
    elif not ranges and not items(dig(props, "sourceTags")) and not items(dig(props, "sourceServiceAccounts")):
        yield f"allows {_ports(allows)} with no source, which GCP reads as 0.0.0.0/0"


def _rule(rule: Any, label: str) -> Iterator[str]:
    if str(dig(rule, "direction") or "").lower() != "inbound" or str(dig(rule, "access") or "").lower() != "allow":
        return
    sources = items(dig(rule, "sourceAddressPrefix")) + items(dig(rule, "sourceAddressPrefixes"))
    world = sorted({source for source in sources if isinstance(source, str) and source.lower() in AZURE_WORLD})
    if world:
        ports = items(dig(rule, "destinationPortRange")) + items(dig(rule, "destinationPortRanges"))
        yield f"{label} allows port {','.join(map(str, ports)) or '*'} from {', '.join(world)}"


def _nsg(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    for index, rule in enumerate(items(dig(props, "securityRules"))):
        yield from _rule(rule, f"securityRules[{index}] ({dig(rule, 'name')})")


def _nsg_rule(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _rule(props, "the rule")


NO_WORLD_OPEN_INGRESS = BaselinePolicy(
    "no-world-open-ingress",
    "No inbound rule (SSH, the API or any other port) admits the whole internet: GCP firewall source ranges and "
    "Azure NSG source prefixes name the allowed networks.",
    {GCP_FIREWALL: _firewall, AZURE_NSG: _nsg, AZURE_NSG_RULE: _nsg_rule},
    remediation_steps="List the admitted networks in spotshift:allowedCidrs and spotshift:sshSourceCidr.",
)
