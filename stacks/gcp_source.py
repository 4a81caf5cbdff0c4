"""The gcp-source stack: the workload on GCP Spot VMs with its state in a private GCS bucket.

``spotshift:freeze: true`` is the cutover freeze: the API turns read-only, the
worker group scales to zero (the update waits until every worker is deleted),
then a freeze marker object is written to the bucket and the stack exports
``frozen: true`` and the marker's key; the azure-target stack's cutover stage
checks both around its final sync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from infra.gcp import PROVISIONING_MODELS, GcpSpotWorkload, GcpSpotWorkloadArgs
from stacks._config import (
    ConfigError,
    export_all,
    image_build,
    read_api_port,
    read_image,
    read_bool,
    read_choice,
    read_cidr,
    read_cidr_list,
    read_int,
    read_str,
    require_str,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")


@dataclass(frozen=True)
class GcpSourceConfig:
    """Validated config of the gcp-source stack."""

    project: str
    region: str
    zone: str
    image: str | None
    build_image: bool
    machine_type: str
    worker_count: int
    api_port: int
    allowed_cidrs: list[str]
    ssh_source_cidr: str | None
    provisioning_model: str
    bucket_force_destroy: bool
    bucket_versioning: bool
    freeze: bool
    noncurrent_version_days: int = 7
    bucket_soft_delete_days: int = 7
    worker_public_ip: bool = False
    flow_logs: bool = True


def load_config() -> GcpSourceConfig:
    """Read and validate every key this stack uses; ConfigError names the first bad key."""
    project = require_str("gcp:project", "run `pulumi config set gcp:project <project-id>`")
    if not _PROJECT_ID.match(project):
        raise ConfigError(f"gcp:project must be a GCP project id such as my-project-123 (got {project!r})")
    region = read_str("gcp:region", "us-central1")
    if not _REGION.match(region):
        raise ConfigError(f"gcp:region must be a GCP region such as us-central1 (got {region!r})")
    zone = read_str("gcp:zone", f"{region}-a")
    if not re.fullmatch(rf"{re.escape(region)}-[a-z]", zone):
        raise ConfigError(f"gcp:zone must be a zone of gcp:region {region}, such as {region}-a (got {zone!r})")

    image, build_image = read_image(REPO_ROOT)
    api_port = read_api_port()
    soft_delete_days = read_int("spotshift:bucketSoftDeleteDays", 0, 90)
    if 0 < soft_delete_days < 7:
        raise ConfigError(
            f"spotshift:bucketSoftDeleteDays must be 0 (off) or 7 to 90, as Cloud Storage allows (got {soft_delete_days})"
        )

    return GcpSourceConfig(
        project=project,
        region=region,
        zone=zone,
        image=image,
        build_image=build_image,
        machine_type=read_str("spotshift:machineType", "e2-standard-2"),
        worker_count=read_int("spotshift:workerCount", 0, 1000),
        api_port=api_port,
        allowed_cidrs=read_cidr_list("spotshift:allowedCidrs"),
        ssh_source_cidr=read_cidr("spotshift:sshSourceCidr"),
        provisioning_model=read_choice("spotshift:provisioningModel", PROVISIONING_MODELS),
        bucket_force_destroy=read_bool("spotshift:bucketForceDestroy"),
        bucket_versioning=read_bool("spotshift:bucketVersioning"),
        freeze=read_bool("spotshift:freeze"),
        noncurrent_version_days=read_int("spotshift:noncurrentVersionDays", 1, 3650),
        bucket_soft_delete_days=soft_delete_days,
        worker_public_ip=read_bool("spotshift:workerPublicIp"),
        flow_logs=read_bool("spotshift:flowLogs"),
    )


def main() -> dict[str, Any]:
    """Build the gcp-source stack and export its outputs (also returned, for tests)."""
    config = load_config()

    workload = GcpSpotWorkload(
        "spotshift",
        GcpSpotWorkloadArgs(
            project=config.project,
            region=config.region,
            zone=config.zone,
            image=config.image,
            build=image_build(config.build_image, REPO_ROOT),
            machine_type=config.machine_type,
            worker_count=config.worker_count,
            api_port=config.api_port,
            allowed_cidrs=config.allowed_cidrs,
            ssh_source_cidr=config.ssh_source_cidr,
            provisioning_model=config.provisioning_model,
            bucket_force_destroy=config.bucket_force_destroy,
            bucket_versioning=config.bucket_versioning,
            freeze=config.freeze,
            noncurrent_version_days=config.noncurrent_version_days,
            bucket_soft_delete_days=config.bucket_soft_delete_days,
            worker_public_ip=config.worker_public_ip,
            flow_logs=config.flow_logs,
        ),
    )

    outputs: dict[str, Any] = {
        "bucket_name": workload.bucket_name,
        "api_url": workload.api_url,
        "api_ip": workload.api_ip,
        # From the freeze marker's outputs: true only after the workers are gone (see FreezeMarker).
        "frozen": workload.frozen,
        # The cutover compares every source object's update time with this object's.
        "freeze_marker": workload.freeze_marker,
        "freeze_marker_generation": workload.freeze_marker_generation,
        "service_account_email": workload.service_account_email,
        "project": config.project,
        "worker_group": workload.worker_group,
    }
    export_all(outputs)
    return outputs
