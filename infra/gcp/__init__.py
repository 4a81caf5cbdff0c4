"""GCP components: ``GcpSpotWorkload`` and the pieces it is built from."""

from infra.gcp.api_vm import GcpSpotApiVm, GcpSpotApiVmArgs
from infra.gcp.bucket import GcsBucket, GcsBucketArgs
from infra.gcp.network import GcpNetwork, GcpNetworkArgs
from infra.gcp.registry import ArtifactRegistryImage, ArtifactRegistryImageArgs
from infra.gcp.spot import PROVISIONING_MODELS
from infra.gcp.workers import SpotWorkerGroup, SpotWorkerGroupArgs
from infra.gcp.workload import GcpSpotWorkload, GcpSpotWorkloadArgs

__all__ = [
    "PROVISIONING_MODELS",
    "ArtifactRegistryImage",
    "ArtifactRegistryImageArgs",
    "GcpNetwork",
    "GcpNetworkArgs",
    "GcpSpotApiVm",
    "GcpSpotApiVmArgs",
    "GcpSpotWorkload",
    "GcpSpotWorkloadArgs",
    "GcsBucket",
    "GcsBucketArgs",
    "SpotWorkerGroup",
    "SpotWorkerGroupArgs",
]
