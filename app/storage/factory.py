"""Build an ``ObjectStore`` from settings or from a location URL.

Configuration mistakes raise ``StorageConfigError`` with a message naming the
environment variable or the URL part to fix, before any network call, so the
API, the worker and the CLI can print one line and exit 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .base import ObjectStore, StorageConfigError

BACKENDS = ("local", "gcp", "azure")


def build_store(
    backend: str,
    *,
    local_path: str | None = None,
    gcs_bucket: str | None = None,
    gcs_project: str | None = None,
    azure_connection_string: str | None = None,
    azure_account_url: str | None = None,
    azure_container: str | None = None,
) -> ObjectStore:
    """Return the store ``STORAGE_BACKEND`` names, configured by the other storage settings."""
    backend = (backend or "").strip().lower()
    if backend == "local":
        from .local import LocalStore

        try:
            return LocalStore(local_path or ".local-store")
        except StorageConfigError as err:
            raise StorageConfigError(f"LOCAL_STORAGE_PATH: {err}") from None
    if backend == "gcp":
        if not gcs_bucket:
            raise StorageConfigError("GCS_BUCKET is required when STORAGE_BACKEND=gcp")
        from .gcs import GcsStore

        return GcsStore(gcs_bucket, project=gcs_project)
    if backend == "azure":
        if not azure_container:
            raise StorageConfigError("AZURE_CONTAINER is required when STORAGE_BACKEND=azure")
        if not azure_connection_string and not azure_account_url:
            raise StorageConfigError(
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL is required when STORAGE_BACKEND=azure"
            )
        from .azure import AzureBlobStore

        return AzureBlobStore(
            azure_container,
            connection_string=azure_connection_string or None,
            account_url=azure_account_url or None,
        )
    raise StorageConfigError(f"STORAGE_BACKEND must be one of {', '.join(BACKENDS)} (got {backend!r})")


@dataclass(frozen=True)
class Location:
    """A parsed ``gs://bucket/prefix``, ``az://container/prefix`` or ``file://path`` location."""

    scheme: str
    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.bucket}"
        return f"{self.scheme}://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


def parse_location(url: str) -> Location:
    """Parse a location; ``StorageConfigError`` explains what a valid one looks like.

    Everything after ``scheme://`` is taken literally, as gsutil, azcopy and
    rclone do: keys may hold ``#``, ``?`` or ``%``, and URL parsing would cut
    the prefix at the first two (with ``--delete``, on the wrong objects).
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        scheme = ""
    if scheme == "file":
        if not rest:
            raise StorageConfigError(f"{url!r}: file:// location needs a path, e.g. file:///tmp/store")
        return Location("file", os.path.abspath(os.path.expanduser(rest)))
    if scheme in ("gs", "az"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            kind = "bucket" if scheme == "gs" else "container"
            raise StorageConfigError(f"{url!r}: missing {kind} name, e.g. {scheme}://NAME[/PREFIX]")
        prefix = prefix.strip("/")
        return Location(scheme, bucket, prefix + "/" if prefix else "")
    raise StorageConfigError(
        f"{url!r}: unsupported location; use gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or file://PATH"
    )


def open_location(url: str, env: Mapping[str, str] | None = None) -> tuple[ObjectStore, str]:
    """Return the store for a location URL and the key prefix inside it.

    Azure's account comes from ``AZURE_STORAGE_CONNECTION_STRING`` or
    ``AZURE_STORAGE_ACCOUNT_URL``; GCS's project from ``GCS_PROJECT``.
    """
    env = os.environ if env is None else env
    location = parse_location(url)
    if location.scheme == "file":
        from .local import LocalStore

        if not os.path.isdir(location.bucket):
            raise StorageConfigError(f"{url}: directory {location.bucket} does not exist")
        return LocalStore(location.bucket, create=False), ""
    if location.scheme == "gs":
        store = build_store("gcp", gcs_bucket=location.bucket, gcs_project=env.get("GCS_PROJECT"))
    else:
        store = build_store(
            "azure",
            azure_container=location.bucket,
            azure_connection_string=env.get("AZURE_STORAGE_CONNECTION_STRING"),
            azure_account_url=env.get("AZURE_STORAGE_ACCOUNT_URL"),
        )
    return store, location.prefix
