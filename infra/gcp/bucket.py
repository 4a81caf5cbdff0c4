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
    """Let ``pulumi destroy`` delete the bucket and every object in it; False keeps the bucket on destroy."""
    versioning: bool = True
    """Keep noncurrent object versions (an overwrite or delete stays recoverable)."""
    noncurrent_version_days: int = 7
    """Days a noncurrent version is kept before lifecycle management deletes it."""
    soft_delete_days: int = 7
    """Days a deleted object stays restorable (0 turns soft delete off; otherwise 7 to 90)."""


def _lifecycle_rules(versioning: bool, noncurrent_version_days: int) -> list[dict]:
    """Delete noncurrent versions after ``noncurrent_version_days``: the queue overwrites its leases and
    job documents all the time, and without this rule every old copy would be kept (and billed) forever."""
    if not versioning:
        return []
    return [{"action": {"type": "Delete"}, "condition": {"days_since_noncurrent_time": noncurrent_version_days}}]


class GcsBucket(pulumi.ComponentResource):
    """A bucket with uniform bucket-level access and public access prevention enforced.

    The bucket is kept on ``pulumi destroy`` (``retain_on_delete``) unless ``force_destroy`` is set:
    both are recorded in the state by ``pulumi up``, which is what ``destroy`` reads.
    """

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
            lifecycle_rules=_lifecycle_rules(args.versioning, args.noncurrent_version_days),
            # Explicit, so the retention (and its storage cost) is a choice, not the 7-day default.
            soft_delete_policy={"retention_duration_seconds": args.soft_delete_days * 86400},
            # A bucket with objects cannot be deleted without force_destroy, and a destroy that stops
            # half-way helps nobody: by default destroy leaves the bucket (and its data) in place.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=not args.force_destroy)),
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
