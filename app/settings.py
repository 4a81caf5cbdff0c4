"""The workload's settings: one pydantic-settings class read from the environment.

The variable names are a contract with the cloud-init env file rendered by
``infra/``, so there is no prefix and the names never change.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from app.storage.base import ObjectStore

_PLACEHOLDER = re.compile(
    r"<[^>]*>|\$\{[^}]*\}|^(changeme|change-me|change_me|placeholder|todo|tbd|xxx+|secret|"
    r"your[-_ ]?connection[-_ ]?string|replace[-_ ]?me|none|null)$",
    re.IGNORECASE,
)
_OPTIONAL_TEXT = (
    "GCS_BUCKET",
    "GCS_PROJECT",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_CONTAINER",
)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Everything the API and the worker read from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", validate_default=True, use_attribute_docstrings=True
    )

    STORAGE_BACKEND: Literal["local", "gcp", "azure"] = "local"
    """Which ObjectStore backend holds uploads, jobs and results."""
    LOCAL_STORAGE_PATH: str = ".local-store"
    """Root directory of the local backend."""
    GCS_BUCKET: str | None = None
    """Bucket name for the gcp backend."""
    GCS_PROJECT: str | None = None
    """Project for the gcp backend (defaults to the ambient credentials' project)."""
    AZURE_STORAGE_CONNECTION_STRING: SecretStr | None = None
    """Connection string for the azure backend (else AZURE_STORAGE_ACCOUNT_URL + managed identity)."""
    AZURE_STORAGE_ACCOUNT_URL: str | None = None
    """Blob endpoint for the azure backend, used with DefaultAzureCredential."""
    AZURE_CONTAINER: str | None = None
    """Container name for the azure backend."""
    LEASE_SECONDS: float = Field(60.0, gt=0)
    """How long a claimed job stays leased without renewal."""
    MAX_ATTEMPTS: int = Field(3, ge=1)
    """Attempts before a job that keeps failing is marked failed."""
    MAX_UPLOAD_BYTES: int = Field(20 * 1024 * 1024, gt=0)
    """Largest accepted upload."""
    MAX_IMAGE_PIXELS: int = Field(40_000_000, gt=0)
    """Largest accepted image area (decompression-bomb cap)."""
    JOB_TIMEOUT_SECONDS: float = Field(120.0, gt=0)
    """Longest one job's decode + transform may run; its child process is then killed and the job retried."""
    JOB_MEMORY_MB: int = Field(1024, ge=128)
    """Address-space cap of the child process that decodes a job (RLIMIT_AS); an image needing more fails."""
    READ_ONLY: bool = False
    """Cutover freeze: the API refuses writes and workers stop claiming."""
    WORKER_ID: str = Field(default_factory=_default_worker_id, min_length=1)
    """Name of this worker in leases and logs."""
    WORKER_GRACE_SECONDS: float = Field(20.0, ge=0)
    """Time a draining worker may spend finishing its job before releasing it."""
    WORKER_POLL_SECONDS: float = Field(2.0, gt=0)
    """Pause between polls of an empty queue."""
    EVICTION_WATCH: Literal["off", "gcp", "azure"] = "off"
    """Which cloud's eviction notice to watch for."""
    GCP_METADATA_URL: str = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"
    """GCE metadata endpoint that turns TRUE on preemption."""
    AZURE_SCHEDULED_EVENTS_URL: str = (
        "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
    )
    """Azure IMDS Scheduled Events endpoint."""
    AZURE_INSTANCE_NAME_URL: str = (
        "http://169.254.169.254/metadata/instance/compute/name?api-version=2021-02-01&format=text"
    )
    """Azure IMDS endpoint with this VM's name, matched against the events' Resources."""
    EVICTION_POLL_SECONDS: float = Field(5.0, gt=0)
    """Pause between eviction-notice polls."""
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Log level of the API and the worker."""

    @field_validator(*_OPTIONAL_TEXT, mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Env files rendered from optional config write `NAME=` for unset values.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("STORAGE_BACKEND", "EVICTION_WATCH", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _uppercase(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("AZURE_STORAGE_CONNECTION_STRING")
    @classmethod
    def _no_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value().strip()
        if _PLACEHOLDER.search(secret) or "=" not in secret:
            raise ValueError(
                "looks like a placeholder, not a connection string; set the real value "
                "or unset it to use AZURE_STORAGE_ACCOUNT_URL with a managed identity"
            )
        return value

    def build_store(self) -> ObjectStore:
        """Build the configured ObjectStore; ``StorageConfigError`` names the variable to fix."""
        from app.storage.factory import build_store

        secret = self.AZURE_STORAGE_CONNECTION_STRING
        return build_store(
            self.STORAGE_BACKEND,
            local_path=self.LOCAL_STORAGE_PATH,
            gcs_bucket=self.GCS_BUCKET,
            gcs_project=self.GCS_PROJECT,
            azure_connection_string=secret.get_secret_value() if secret else None,
            azure_account_url=self.AZURE_STORAGE_ACCOUNT_URL,
            azure_container=self.AZURE_CONTAINER,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; ``ConfigError`` holds one line naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Render a validation error as one line, ``NAME: problem (got 'value')``; secrets are never echoed."""
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        shown = "" if "SECRET" in name or "CONNECTION_STRING" in name else _shown_input(error)
        problems.append(f"{name}: {message}{shown}")
    return "; ".join(problems)


def _shown_input(error: Any) -> str:
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)):
        return f" (got {str(value)[:60]!r})"
    return ""
