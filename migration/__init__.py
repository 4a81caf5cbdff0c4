"""The object migration: a copy engine (plan → copy → verify → report), its CLI and its Pulumi resource.

The engine's public API lives in ``migration.copier`` and is re-exported
here; ``migration.resource`` (Pulumi) is not imported by this package, so
the CLI starts without Pulumi.
"""

from .copier import (
    Shard,
    DEFAULT_MAX_DELETE,
    DEFAULT_WORKERS,
    PROVENANCE_KEYS,
    DeleteLimitExceeded,
    Plan,
    Progress,
    RetryPolicy,
    UsageError,
    compare,
    manifest_digest,
    plan,
    sync,
    verify,
)
from .report import Problem, SyncReport, VerifyReport

__all__ = [
    "DEFAULT_MAX_DELETE",
    "DEFAULT_WORKERS",
    "PROVENANCE_KEYS",
    "DeleteLimitExceeded",
    "Plan",
    "Problem",
    "Progress",
    "RetryPolicy",
    "Shard",
    "SyncReport",
    "UsageError",
    "VerifyReport",
    "compare",
    "manifest_digest",
    "plan",
    "sync",
    "verify",
]
