"""Spot scheduling and VM defaults shared by the API VM and the worker template."""

from __future__ import annotations

from typing import Any, Literal

#: ``SPOT`` (no maximum run time, termination action chosen per VM) or the
#: legacy ``preemptible`` model (stopped after at most 24 h).
PROVISIONING_MODELS = ("SPOT", "preemptible")

#: Ubuntu 24.04 LTS, the same release the Azure VMs boot; the family follows
#: the latest published image, taken at (re)creation.
UBUNTU_2404_IMAGE = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"

#: One broad scope; what the service account may do is limited by its IAM
#: bindings (Google's recommended pattern for service accounts on VMs).
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

#: Shielded VM: secure boot, vTPM and integrity monitoring (Ubuntu images support all three).
SHIELDED_VM = {"enable_secure_boot": True, "enable_vtpm": True, "enable_integrity_monitoring": True}


def spot_scheduling(provisioning_model: str, termination_action: Literal["STOP", "DELETE"]) -> dict[str, Any]:
    """The ``scheduling`` block for a Spot (or legacy preemptible) VM.

    Spot VMs cannot live-migrate or restart on their own: ``automatic_restart``
    must be False and ``on_host_maintenance`` TERMINATE. ``instance_termination_action``
    exists only for the SPOT model; preemptible VMs are always stopped.
    """
    if provisioning_model == "SPOT":
        return {
            "provisioning_model": "SPOT",
            "preemptible": True,
            "automatic_restart": False,
            "on_host_maintenance": "TERMINATE",
            "instance_termination_action": termination_action,
        }
    if provisioning_model == "preemptible":
        return {"preemptible": True, "automatic_restart": False, "on_host_maintenance": "TERMINATE"}
    raise ValueError(f"provisioning_model must be one of {', '.join(PROVISIONING_MODELS)} (got {provisioning_model!r})")


def vm_metadata(user_data: str) -> dict[str, str]:
    """Instance metadata: cloud-init's ``user-data`` plus OS Login instead of metadata SSH keys."""
    return {"user-data": user_data, "enable-oslogin": "TRUE", "block-project-ssh-keys": "TRUE"}
