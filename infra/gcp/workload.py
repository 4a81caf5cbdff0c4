"""``GcpSpotWorkload``: the whole source deployment — network, bucket, identity, API VM and workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra._naming import dns_label
from infra.cloud_init import CloudInitArgs, render_cloud_init
from infra.gcp.api_vm import GcpSpotApiVm, GcpSpotApiVmArgs
from infra.gcp.bucket import GcsBucket, GcsBucketArgs
from infra.gcp.freeze import FreezeMarker, FreezeMarkerArgs
from infra.gcp.network import GcpNetwork, GcpNetworkArgs
from infra.gcp.registry import ArtifactRegistryImage, ArtifactRegistryImageArgs
from infra.gcp.workers import SpotWorkerGroup, SpotWorkerGroupArgs
from infra.images import ImageBuildArgs


@dataclass
class GcpSpotWorkloadArgs:
    """Inputs of :class:`GcpSpotWorkload` (plain values where they decide which resources exist)."""

    project: str
    """GCP project id."""
    region: str
    """Region of the subnet, bucket, static IP and registry."""
    zone: str
    """Zone of the VMs."""
    image: pulumi.Input[str] | None = None
    """Container image to run; ignored when ``build`` is set."""
    build: ImageBuildArgs | None = None
    """Build the image and push it to Artifact Registry instead of using ``image``."""
    machine_type: pulumi.Input[str] = "e2-standard-2"
    """Machine type of the API VM and the workers."""
    worker_count: int = 2
    """Workers in the group (0 when frozen)."""
    api_port: int = 8080
    """TCP port of the API."""
    allowed_cidrs: Sequence[str] = field(default_factory=list)
    """Sources allowed to reach the API port; empty keeps it closed."""
    ssh_source_cidr: str | None = None
    """Source allowed to reach SSH; None keeps it closed."""
    provisioning_model: str = "SPOT"
    """``SPOT`` or ``preemptible``."""
    bucket_force_destroy: bool = False
    """Let ``pulumi destroy`` delete a non-empty bucket."""
    bucket_versioning: bool = True
    """Keep noncurrent object versions."""
    noncurrent_version_days: int = 7
    """Days a noncurrent object version is kept."""
    bucket_soft_delete_days: int = 7
    """Days a deleted object stays restorable (0 off, else 7 to 90)."""
    worker_public_ip: bool = False
    """Ephemeral external IPs on the workers instead of a Cloud NAT."""
    flow_logs: bool = True
    """VPC flow logs on the subnet."""
    freeze: bool = False
    """Cutover freeze: the API turns read-only and the worker group scales to 0."""
    lease_seconds: float = 60
    """LEASE_SECONDS of the workload."""
    worker_grace_seconds: float = 20
    """WORKER_GRACE_SECONDS of the workload (must end before the worker's stop timeout)."""


class GcpSpotWorkload(pulumi.ComponentResource):
    """The spotshift workload on GCP Spot VMs with its state in one private GCS bucket."""

    bucket_name: pulumi.Output[str]
    service_account_email: pulumi.Output[str]
    api_ip: pulumi.Output[str]
    api_url: pulumi.Output[str]
    worker_group: pulumi.Output[str]
    image: pulumi.Output[str]
    frozen: pulumi.Output[bool]
    """True only once the freeze marker exists (after the workers are gone); False when not frozen."""
    freeze_marker: pulumi.Output[str] | None
    """Key of the freeze marker object, or None when not frozen."""
    freeze_marker_generation: pulumi.Output[int] | None
    """GCS generation of the freeze marker, or None when not frozen."""

    def __init__(self, name: str, args: GcpSpotWorkloadArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:GcpSpotWorkload", name, None, opts)
        if args.build is None and not args.image:
            raise ValueError("GcpSpotWorkloadArgs needs an image or a build")
        child = pulumi.ResourceOptions(parent=self)
        api_tag, worker_tag = dns_label(f"{name}-api", 63), dns_label(f"{name}-worker", 63)

        network = GcpNetwork(
            f"{name}-net",
            GcpNetworkArgs(
                project=args.project,
                region=args.region,
                api_port=args.api_port,
                api_tag=api_tag,
                ssh_tags=[api_tag, worker_tag],
                allowed_cidrs=args.allowed_cidrs,
                ssh_source_cidr=args.ssh_source_cidr,
                flow_logs=args.flow_logs,
                cloud_nat=not args.worker_public_ip,
            ),
            opts=child,
        )
        account = gcp.serviceaccount.Account(
            f"{name}-sa",
            project=args.project,
            # account_id is unique per project: the stack name keeps two stacks apart.
            account_id=dns_label(f"{name}-{pulumi.get_stack()}", 30),
            display_name=f"spotshift workload ({pulumi.get_stack()})",
            opts=child,
        )
        member = pulumi.Output.concat("serviceAccount:", account.email)
        bucket = GcsBucket(
            f"{name}-state",
            GcsBucketArgs(
                project=args.project,
                location=args.region.upper(),
                object_admins=[member],
                force_destroy=args.bucket_force_destroy,
                versioning=args.bucket_versioning,
                noncurrent_version_days=args.noncurrent_version_days,
                soft_delete_days=args.bucket_soft_delete_days,
            ),
            opts=child,
        )
        grants: list[pulumi.Resource] = list(bucket.iam_members)

        registry_server: str | None = None
        if args.build is not None:
            built = ArtifactRegistryImage(
                f"{name}-registry",
                ArtifactRegistryImageArgs(
                    project=args.project, location=args.region, build=args.build, readers=[member]
                ),
                opts=child,
            )
            image = built.image_ref
            registry_server = built.registry_server
            grants += built.reader_grants
        else:
            image = pulumi.Output.from_input(args.image)

        def cloud_init(role: str) -> pulumi.Output[str]:
            return render_cloud_init(
                CloudInitArgs(
                    cloud="gcp",
                    role=role,  # type: ignore[arg-type]
                    image=image,
                    api_port=args.api_port,
                    read_only=args.freeze,
                    lease_seconds=args.lease_seconds,
                    worker_grace_seconds=args.worker_grace_seconds,
                    gcs_bucket=bucket.bucket_name,
                    gcs_project=args.project,
                    registry_server=registry_server,
                )
            )

        api = GcpSpotApiVm(
            f"{name}-api",
            GcpSpotApiVmArgs(
                project=args.project,
                region=args.region,
                zone=args.zone,
                subnetwork=network.subnetwork_id,
                service_account_email=account.email,
                user_data=cloud_init("api"),
                tags=[api_tag],
                machine_type=args.machine_type,
                provisioning_model=args.provisioning_model,
                depends_on=grants,
            ),
            opts=child,
        )
        workers = SpotWorkerGroup(
            f"{name}-workers",
            SpotWorkerGroupArgs(
                project=args.project,
                zone=args.zone,
                subnetwork=network.subnetwork_id,
                service_account_email=account.email,
                user_data=cloud_init("worker"),
                tags=[worker_tag],
                # Frozen: no worker may write while the final sync runs.
                target_size=0 if args.freeze else args.worker_count,
                wait_for_stable=args.freeze,
                machine_type=args.machine_type,
                provisioning_model=args.provisioning_model,
                public_ip=args.worker_public_ip,
                depends_on=grants + network.egress,
            ),
            opts=child,
        )
        self.freeze_marker = self.freeze_marker_generation = None
        frozen: pulumi.Output[bool] = pulumi.Output.from_input(False)
        if args.freeze:
            # Written only after the group's resize has finished (every worker deleted) and the
            # read-only API VM has replaced the writable one.
            marker = FreezeMarker(
                f"{name}-freeze",
                FreezeMarkerArgs(bucket=bucket.bucket_name, stopped=[workers.group, api.instance],
                                 stack=pulumi.get_stack()),
                opts=child,
            )
            frozen = marker.frozen
            self.freeze_marker = marker.key
            self.freeze_marker_generation = marker.generation

        self.bucket_name = bucket.bucket_name
        self.service_account_email = account.email
        self.api_ip = api.ip_address
        self.api_url = pulumi.Output.concat("http://", api.ip_address, ":", str(args.api_port))
        self.worker_group = workers.group_name
        self.image = image
        self.frozen = frozen
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "service_account_email": self.service_account_email,
                "api_ip": self.api_ip,
                "api_url": self.api_url,
                "worker_group": self.worker_group,
                "image": self.image,
                "frozen": self.frozen,
                "freeze_marker": self.freeze_marker,
            }
        )
