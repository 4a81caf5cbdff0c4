"""The object migration: a copy engine (plan → copy → verify → report), its CLI and its Pulumi resource.

The engine's public API lives in ``migration.copier`` and is re-exported
here, imported when first used; ``migration.resource`` (Pulumi) is not
imported by this package, so the CLI starts without Pulumi.
"""

import importlib
from typing import Any

#: Where each re-exported name lives. Loaded on first use (PEP 562), so ``spotshift migrate`` can
#: start its target's listing before the rest of the engine is imported.
_HOME = {
    **dict.fromkeys(("DEFAULT_MAX_DELETE", "DEFAULT_WORKERS", "PROVENANCE_METADATA_KEY", "DeleteLimitExceeded",
                     "Plan", "Progress", "Provenance", "RetryPolicy", "Shard", "UsageError", "compare",
                     "manifest_digest", "plan", "provenance_of", "sync", "verify"), "copier"),
    **dict.fromkeys(("Problem", "SyncReport", "VerifyReport"), "report"),
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
