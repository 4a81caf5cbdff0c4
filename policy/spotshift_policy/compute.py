"""Azure VM hardening: encryption at host, no extension operations on the API VM."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, show
from .types import AZURE_VM, AZURE_VMSS


def _encryption(profile: Any, where: str) -> Iterator[str]:
    value = dig(profile, "securityProfile", "encryptionAtHost")
    if value is not True:
        yield f"{where}securityProfile.encryptionAtHost is {show(value)}, not true (temp disk and caches unencrypted)"


def _vm_encryption(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _encryption(props, "")


def _vmss_encryption(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _encryption(dig(props, "virtualMachineProfile"), "virtualMachineProfile.")


def _vm_extensions(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    value = dig(props, "osProfile", "allowExtensionOperations")
    if value is not False:
        yield f"osProfile.allowExtensionOperations is {show(value)}, not false (Run Command and extensions can run code)"


ENCRYPTION_AT_HOST = BaselinePolicy(
    "encryption-at-host",
    "Azure VMs and scale sets encrypt at host (temp disks and disk caches too).",
    {AZURE_VM: _vm_encryption, AZURE_VMSS: _vmss_encryption},
    remediation_steps=(
        "Register the feature once per subscription (az feature register --namespace Microsoft.Compute "
        "--name EncryptionAtHost) and keep spotshift:encryptionAtHost true."
    ),
)

NO_VM_EXTENSION_OPERATIONS = BaselinePolicy(
    "no-vm-extension-operations",
    "Azure VMs refuse extension operations (Run Command, custom script extensions): cloud-init configures them.",
    {AZURE_VM: _vm_extensions},
)

