"""Azure storage account transport and authentication: TLS 1.2+, HTTPS only, no shared keys, deny by default."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, show
from .types import AZURE_ACCOUNT

#: TLS versions the baseline accepts as a minimum.
MODERN_TLS = ("TLS1_2", "TLS1_3")


def _transport(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "minimumTlsVersion") not in MODERN_TLS:
        # Left unset, Azure's interpretation is TLS 1.0.
        yield f"minimumTlsVersion is {show(dig(props, 'minimumTlsVersion'))}, not TLS1_2 or later"
    if dig(props, "enableHttpsTrafficOnly") is not True:
        yield f"enableHttpsTrafficOnly is {show(dig(props, 'enableHttpsTrafficOnly'))}, not true"


def _shared_keys(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    # Unset means allowed: account keys and SAS tokens would bypass Entra ID and its role assignments.
    if dig(props, "allowSharedKeyAccess") is not False:
        yield f"allowSharedKeyAccess is {show(dig(props, 'allowSharedKeyAccess'))}, not false"


def _network(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    action = dig(props, "networkRuleSet", "defaultAction")
    if action != "Deny":
        yield f"networkRuleSet.defaultAction is {show(action)}, not 'Deny' (reachable from every network)"


TLS_HTTPS_ONLY = BaselinePolicy(
    "tls12-https-only",
    "Storage accounts accept HTTPS only, with TLS 1.2 or later.",
    {AZURE_ACCOUNT: _transport},
)

SHARED_KEYS_OFF = BaselinePolicy(
    "shared-keys-off",
    "Storage accounts refuse account keys and SAS: all data access goes through Entra ID role assignments.",
    {AZURE_ACCOUNT: _shared_keys},
    remediation_steps="Keep spotshift:allowSharedKeyAccess false; grant 'Storage Blob Data Contributor' instead.",
)

STORAGE_DENY_BY_DEFAULT = BaselinePolicy(
    "storage-deny-by-default",
    "Storage accounts deny every network by default; the VMs' subnet and the listed deployer addresses are admitted.",
    {AZURE_ACCOUNT: _network},
    remediation_steps="Put the deployer's public IP in spotshift:storageAllowedCidrs for the sync and cutover stages.",
)
