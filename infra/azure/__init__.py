"""Azure components: ``AzureSpotWorkload`` and the pieces it is built from."""

from infra.azure.api_vm import AzureSpotApiVm, AzureSpotApiVmArgs
from infra.azure.network import AzureNetwork, AzureNetworkArgs
from infra.azure.registry import AcrImage, AcrImageArgs
from infra.azure.spot import EVICTION_POLICIES
from infra.azure.storage import AzureBlobStorage, AzureBlobStorageArgs, BlobDataContributor
from infra.azure.workers import AzureSpotWorkerScaleSet, AzureSpotWorkerScaleSetArgs
from infra.azure.workload import AzureSpotWorkload, AzureSpotWorkloadArgs

__all__ = [
    "EVICTION_POLICIES",
    "AcrImage",
    "AcrImageArgs",
    "AzureBlobStorage",
    "AzureBlobStorageArgs",
    "AzureNetwork",
    "AzureNetworkArgs",
    "AzureSpotApiVm",
    "AzureSpotApiVmArgs",
    "AzureSpotWorkerScaleSet",
    "AzureSpotWorkerScaleSetArgs",
    "AzureSpotWorkload",
    "AzureSpotWorkloadArgs",
    "BlobDataContributor",
]
