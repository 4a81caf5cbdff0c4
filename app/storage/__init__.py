"""One storage interface (``ObjectStore``) and its backends: local, GCS, Azure Blob."""

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

__all__ = [
    "CHUNK_SIZE",
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
