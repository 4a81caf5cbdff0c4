"""The object migration: a copy engine (plan → copy → verify → report), its CLI and its Pulumi resource.

The engine's public API lives in ``migration.copier`` and is re-exported
here; ``migration.resource`` (Pulumi) is not imported by this package, so
the CLI starts without Pulumi.
"""

from .copier import (
    Shard,
    DEFAULT_MAX_DELETE,
    DEFAULT_WORKERS,
    PROVENANCE_METADATA_KEY,
    DeleteLimitExceeded,
    Plan,
    Progress,
    Provenance,
    RetryPolicy,
    UsageError,
    compare,
    manifest_digest,
    plan,
    provenance_of,
    sync,
    verify,
)
from .report import Problem, SyncReport, VerifyReport

__all__ = [
    "DEFAULT_MAX_DELETE",
    "DEFAULT_WORKERS",
    "PROVENANCE_METADATA_KEY",
    "DeleteLimitExceeded",
    "Plan",
    "Problem",
    "Progress",
    "Provenance",
    "RetryPolicy",
    "Shard",
    "SyncReport",
    "UsageError",
    "VerifyReport",
    "compare",
    "manifest_digest",
    "plan",
    "provenance_of",
    "sync",
    "verify",
]
