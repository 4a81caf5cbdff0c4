"""Spot everywhere: every GCP VM and template is Spot, every Azure VM and scale set has Spot priority."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import PolicyConfigSchema

from ._base import BaselinePolicy, dig, show
from .types import AZURE_VM, AZURE_VMSS, GCP_VM_TYPES


def _gcp_vm(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    model = dig(props, "scheduling", "provisioningModel")
    preemptible = dig(props, "scheduling", "preemptible")
    if model == "SPOT" and preemptible is True:
        return
    if model is None and preemptible is True and config["allowLegacyPreemptible"]:
        return
    yield (
        f"scheduling.provisioningModel is {show(model)} and scheduling.preemptible {show(preemptible)}; "
        "Spot VMs need provisioningModel 'SPOT' with preemptible true"
    )


def _azure_priority(profile: Mapping[str, Any], where: str) -> Iterator[str]:
    priority = dig(profile, "priority")
    if priority != "Spot":
        yield f"{where}priority is {show(priority)}, not 'Spot'"


def _azure_vm(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    yield from _azure_priority(props, "")


def _azure_vmss(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    profile = dig(props, "virtualMachineProfile") or {}
    yield from _azure_priority(profile, "virtualMachineProfile.")
    # Deallocated Spot instances keep billed disks and quota; Delete lets the set replace them.
    eviction = dig(profile, "evictionPolicy")
    if eviction != "Delete":
        yield f"virtualMachineProfile.evictionPolicy is {show(eviction)}; a Spot scale set evicts with 'Delete'"


SPOT_EVERYWHERE = BaselinePolicy(
    "spot-everywhere",
    "Every VM is a Spot VM: GCP instances and templates use the SPOT model, Azure VMs and scale sets "
    "Spot priority, and Spot scale sets delete evicted instances.",
    {**{typ: _gcp_vm for typ in GCP_VM_TYPES}, AZURE_VM: _azure_vm, AZURE_VMSS: _azure_vmss},
    config_schema=PolicyConfigSchema(
        properties={
            "allowLegacyPreemptible": {
                "type": "boolean",
                "default": False,
                "description": "Also accept GCP's legacy preemptible model (stopped after 24 h).",
            }
        }
    ),
    remediation_steps="Keep spotshift:provisioningModel at SPOT; Spot settings live in infra/gcp/spot.py and infra/azure/spot.py.",
)
