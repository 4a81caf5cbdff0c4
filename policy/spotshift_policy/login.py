"""No password login on the Azure VMs and scale sets: SSH keys only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, show
from .types import AZURE_VM, AZURE_VMSS


def _os_profile(os_profile: Any, where: str) -> Iterator[str]:
    if os_profile is None:
        yield f"{where}osProfile is unset (no Linux configuration that disables passwords)"
        return
    disabled = dig(os_profile, "linuxConfiguration", "disablePasswordAuthentication")
    if disabled is not True:
        yield f"{where}osProfile.linuxConfiguration.disablePasswordAuthentication is {show(disabled)}, not true"
    # Never echo the value: only say that one is set.
    if dig(os_profile, "adminPassword") is not None:
        yield f"{where}osProfile.adminPassword is set"


def _vm(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _os_profile(dig(props, "osProfile"), "")


def _vmss(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _os_profile(dig(props, "virtualMachineProfile", "osProfile"), "virtualMachineProfile.")


NO_PASSWORD_LOGIN = BaselinePolicy(
    "no-password-login",
    "Azure VMs and scale sets allow SSH key login only: password authentication disabled, no admin password.",
    {AZURE_VM: _vm, AZURE_VMSS: _vmss},
)
