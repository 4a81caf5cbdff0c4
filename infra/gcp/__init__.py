"""GCP components: ``GcpSpotWorkload`` and the pieces it is built from."""

from infra.gcp.api_vm import GcpSpotApiVm, GcpSpotApiVmArgs
from infra.gcp.bucket import GcsBucket, GcsBucketArgs
from infra.gcp.freeze import FREEZE_MARKER_KEY, FreezeMarker, FreezeMarkerArgs
from infra.gcp.network import GcpNetwork, GcpNetworkArgs
from infra.gcp.registry import ArtifactRegistryImage, ArtifactRegistryImageArgs
from infra.gcp.spot import PROVISIONING_MODELS
from infra.gcp.workers import SpotWorkerGroup, SpotWorkerGroupArgs
from infra.gcp.workload import GcpSpotWorkload, GcpSpotWorkloadArgs

__all__ = [
    "FREEZE_MARKER_KEY",
    "PROVISIONING_MODELS",
    "ArtifactRegistryImage",
    "ArtifactRegistryImageArgs",
    "FreezeMarker",
    "FreezeMarkerArgs",
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
