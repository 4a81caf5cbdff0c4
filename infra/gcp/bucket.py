"""``GcsBucket``: a private bucket and object-level access for the workload's identities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

#: Read, write and delete objects of this bucket only; no bucket settings or IAM.
OBJECT_ADMIN_ROLE = "roles/storage.objectAdmin"


@dataclass
class GcsBucketArgs:
    """Inputs of :class:`GcsBucket`."""

    project: pulumi.Input[str]
    """GCP project id."""
    location: pulumi.Input[str]
    """Bucket location, e.g. ``US-CENTRAL1`` (the workload's region)."""
    object_admins: Sequence[pulumi.Input[str]] = field(default_factory=list)
    """IAM members (``serviceAccount:...``) granted objectAdmin on this bucket only."""
    force_destroy: bool = False
    """Let ``pulumi destroy`` delete a bucket that still holds objects."""
    versioning: bool = False
    """Keep noncurrent object versions."""


class GcsBucket(pulumi.ComponentResource):
    """A bucket with uniform bucket-level access and public access prevention enforced."""

    bucket_name: pulumi.Output[str]
    bucket_url: pulumi.Output[str]
    iam_members: list[gcp.storage.BucketIAMMember]

    def __init__(self, name: str, args: GcsBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:GcsBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        bucket = gcp.storage.Bucket(
            f"{name}-bucket",
            project=args.project,
            location=args.location,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            force_destroy=args.force_destroy,
            versioning={"enabled": args.versioning},
            opts=child,
        )
        # BucketIAMMember adds one binding and leaves the bucket's other members
        # alone (BucketIAMPolicy would replace them all; never mix the two).
        self.iam_members = [
            gcp.storage.BucketIAMMember(
                f"{name}-object-admin-{index}",
                bucket=bucket.name,
                role=OBJECT_ADMIN_ROLE,
                member=member,
                opts=child,
            )
            for index, member in enumerate(args.object_admins)
        ]

        self.bucket_name = bucket.name
        self.bucket_url = bucket.url
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_url": self.bucket_url})
