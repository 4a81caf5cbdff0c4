"""One storage interface (``ObjectStore``) and its backends: local, GCS, Azure Blob.

``GcsStore`` and ``AzureBlobStore`` are importable from here but load their
cloud SDK only when first touched, so ``import app.storage`` stays light.
"""

from typing import TYPE_CHECKING, Any

from .base import (
    CHUNK_SIZE,
    Hasher,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from .local import LocalStore

if TYPE_CHECKING:
    from .azure import AzureBlobStore
    from .gcs import GcsStore

_LAZY = {"GcsStore": ".gcs", "AzureBlobStore": ".azure"}

__all__ = [
    "CHUNK_SIZE",
    "AzureBlobStore",
    "GcsStore",
    "Hasher",
    "IntegrityError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "StorageConfigError",
    "StorageError",
    "TransientStorageError",
]


def __getattr__(name: str) -> Any:
    """Import a cloud backend on first access (PEP 562)."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
