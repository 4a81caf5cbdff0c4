"""Spot settings, the Ubuntu image and the Linux login shared by the API VM and the scale set."""

from __future__ import annotations

import base64
from typing import Any

#: What Azure does to an evicted Spot VM: ``Deallocate`` keeps the disks (and
#: the NIC/IP) for a restart; ``Delete`` removes the VM and its OS disk.
EVICTION_POLICIES = ("Deallocate", "Delete")

#: -1: pay up to the on-demand price, so the VM is never evicted for price, only for capacity.
SPOT_MAX_PRICE = -1

#: Ubuntu 24.04 LTS (Gen2), the release the GCP VMs boot.
UBUNTU_2404_IMAGE = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}

#: Trusted launch: secure boot and vTPM, Azure's counterpart of GCP's shielded VM.
TRUSTED_LAUNCH = {"security_type": "TrustedLaunch", "uefi_settings": {"secure_boot_enabled": True, "v_tpm_enabled": True}}


def security_profile(encryption_at_host: bool) -> dict[str, Any]:
    """Trusted launch plus encryption at host (temp disks and caches encrypted on the host too)."""
    return {**TRUSTED_LAUNCH, "encryption_at_host": encryption_at_host}


def linux_ssh_only(admin_username: str, ssh_public_key: str) -> dict[str, Any]:
    """``linux_configuration`` that allows SSH key login only (no password is ever set)."""
    return {
        "disable_password_authentication": True,
        "provision_vm_agent": True,
        "ssh": {"public_keys": [{"path": f"/home/{admin_username}/.ssh/authorized_keys", "key_data": ssh_public_key}]},
    }


def custom_data(cloud_init: str) -> str:
    """``os_profile.custom_data``: the cloud-init document, base64-encoded as the API requires."""
    return base64.b64encode(cloud_init.encode()).decode("ascii")
