"""No secret-looking values in user data or custom data: anything on the VM can read them."""

from __future__ import annotations

import base64
import binascii
import gzip
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig
from .types import AZURE_VM, AZURE_VMSS, GCP_VM_TYPES

#: What a secret looks like, by name; messages name the kind, never the value.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "a private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "a service account key (private_key)": re.compile(r"\"private_key\"\s*:"),
    "a storage account key (AccountKey=)": re.compile(r"AccountKey=", re.IGNORECASE),
    "a SAS token (SharedAccessSignature=)": re.compile(r"SharedAccessSignature=", re.IGNORECASE),
    "a SAS signature (sig=)": re.compile(r"[?&]sig=[^&\s]+", re.IGNORECASE),
    # A value on the same line (YAML `key:` followed by a block is no value), booleans excluded:
    # cloud-init's `lock_passwd: true` is a setting, not a password.
    "a password": re.compile(
        r"\b[\w-]*pass(?:word|wd)[ \t]*[=:][ \t]*[\"']?(?!(?:true|false|yes|no|null)\b)[^\s\"']", re.IGNORECASE
    ),
    "a client secret": re.compile(r"client[_-]?secret[ \t]*[=:][ \t]*[\"']?[^\s\"']", re.IGNORECASE),
    "a Google OAuth access token (ya29.)": re.compile(r"\bya29\.[0-9A-Za-z_-]{10,}"),
    "an AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
}


def decoded(value: str) -> str:
    """Base64 custom/user data as text (gunzipped when compressed); anything else as it is."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except OSError:
            return value
    return raw.decode("utf-8", errors="replace")


def secrets_in(text: Any) -> list[str]:
    """The kinds of secret ``text`` appears to hold."""
    if not isinstance(text, str):
        return []
    return [kind for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def _report(where: str, text: Any) -> Iterator[str]:
    for kind in secrets_in(text):
        yield f"{where} holds what looks like {kind}; pass it as a Pulumi secret through an identity or a vault instead"


def _gcp_vm(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    metadata = dig(props, "metadata")
    if isinstance(metadata, Mapping):
        for key in metadata:
            yield from _report(f"metadata[{key!r}]", metadata[key])
    yield from _report("metadataStartupScript", dig(props, "metadataStartupScript"))


def _azure_profile(profile: Any, where: str) -> Iterator[str]:
    for path in (("osProfile", "customData"), ("userData",)):
        value = dig(profile, *path)
        if isinstance(value, str):
            yield from _report(where + ".".join(path), decoded(value))


def _vm(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _azure_profile(props, "")


def _vmss(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _azure_profile(dig(props, "virtualMachineProfile"), "virtualMachineProfile.")


NO_SECRETS_IN_USER_DATA = BaselinePolicy(
    "no-secrets-in-user-data",
    "User data, startup scripts and custom data hold no secrets (private keys, account keys, SAS, passwords, tokens): "
    "every process on the VM and everyone who can read the VM's model can read them.",
    {**{typ: _gcp_vm for typ in GCP_VM_TYPES}, AZURE_VM: _vm, AZURE_VMSS: _vmss},
    remediation_steps="The VMs authenticate with their managed identity / service account; no credential is rendered.",
)
