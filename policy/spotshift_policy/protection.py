"""The data's last copy is protected: a rename or refactor of the Azure account or container cannot delete it."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from .types import AZURE_ACCOUNT, AZURE_CONTAINER

#: Where the migrated data ends up; Pulumi's default replacement creates the new one, then deletes the old.
PROTECTED_TYPES = frozenset({AZURE_ACCOUNT, AZURE_CONTAINER})


class DataStoresProtected(ResourceValidationPolicy):
    """Reads the resource option ``protect``, which the analyzer passes next to the props."""

    resource_types = PROTECTED_TYPES

    def validate(self, args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        """Report an Azure storage account or container declared without ``protect``."""
        if args.resource_type in PROTECTED_TYPES and not args.opts.protect:
            report_violation(
                f"{args.resource_type} {args.name!r}: declared without protect; a replacement or removal would delete "
                "the data it holds",
                args.urn,
            )


DATA_STORES_PROTECTED = DataStoresProtected(
    "data-stores-protected",
    "Azure storage accounts and containers are protected (the resource option protect): Pulumi refuses to delete them.",
    remediation_steps="Keep spotshift:protectStorage true; to delete on purpose, follow the README's decommission steps.",
)
