"""Data protection on where the data lives: blob + container soft delete and versioning; GCS versioning and an explicit soft-delete choice."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from ._base import BaselinePolicy, dig, show
from .types import AZURE_ACCOUNT, AZURE_BLOB_SERVICE, GCP_BUCKET

_CONFIG = PolicyConfigSchema(
    properties={
        "minRetentionDays": {
            "type": "integer",
            "default": 7,
            "minimum": 1,
            "description": "Fewest days a deleted Azure blob or container must stay restorable.",
        }
    }
)


def _retention(props: Mapping[str, Any], key: str, minimum: int) -> Iterator[str]:
    enabled, days = dig(props, key, "enabled"), dig(props, key, "days")
    if enabled is not True:
        yield f"{key}.enabled is {show(enabled)}, not true"
    # Numbers reach an analyzer as JSON numbers (7.0), never as Python ints only.
    elif isinstance(days, bool) or not isinstance(days, (int, float)) or days < minimum:
        yield f"{key}.days is {show(days)}, fewer than {minimum}"


def _blob_service(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    minimum = int(config["minRetentionDays"])
    yield from _retention(props, "deleteRetentionPolicy", minimum)
    yield from _retention(props, "containerDeleteRetentionPolicy", minimum)
    if dig(props, "isVersioningEnabled") is not True:
        yield f"isVersioningEnabled is {show(dig(props, 'isVersioningEnabled'))}, not true"


def _bucket(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "versioning", "enabled") is not True:
        yield f"versioning.enabled is {show(dig(props, 'versioning', 'enabled'))}, not true"
    # Unset means Google's 7-day default: the retention (and what it costs) must be a choice.
    if dig(props, "softDeletePolicy", "retentionDurationSeconds") is None:
        yield "softDeletePolicy.retentionDurationSeconds is unset; state the soft-delete retention explicitly"


DATA_PROTECTION_ON = BaselinePolicy(
    "data-protection-on",
    "Deleted or overwritten data stays recoverable: Azure blob and container soft delete plus versioning; "
    "GCS versioning and an explicit soft-delete retention.",
    {AZURE_BLOB_SERVICE: _blob_service, GCP_BUCKET: _bucket},
    config_schema=_CONFIG,
    remediation_steps="See spotshift:blobSoftDeleteDays, spotshift:bucketVersioning and spotshift:bucketSoftDeleteDays.",
)


def _serves(service: Any, account: Any) -> bool:
    """Whether BlobServiceProperties ``service`` configures storage account ``account``."""
    # The account's name is unknown in a first preview; the dependency the engine records is not.
    account_dependencies = (service.property_dependencies or {}).get("accountName") or service.dependencies or []
    if account.urn in {dependency.urn for dependency in account_dependencies}:
        return True
    name = dig(service.props, "accountName")
    return name is not None and name in (dig(account.props, "name"), dig(account.props, "accountName"))


def _every_account_has_blob_service(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = list(args.resources)
    services = [resource for resource in resources if resource.resource_type == AZURE_BLOB_SERVICE]
    for account in resources:
        if account.resource_type == AZURE_ACCOUNT and not any(_serves(service, account) for service in services):
            report_violation(
                f"storage account {account.name!r} has no {AZURE_BLOB_SERVICE}: soft delete and versioning are off",
                account.urn,
            )


DATA_PROTECTION_CONFIGURED = StackValidationPolicy(
    name="data-protection-configured",
    description="Every Azure storage account has blob service properties (soft delete and versioning are off without them).",
    validate=_every_account_has_blob_service,
    enforcement_level=EnforcementLevel.MANDATORY,
)
