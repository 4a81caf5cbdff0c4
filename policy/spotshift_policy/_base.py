"""One resource policy = a table of per-type checks; helpers to read wire-name (camelCase) props."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

#: A check reads a resource's props (and the policy's config) and yields one message per problem.
Check = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterable[str]]


class BaselinePolicy(ResourceValidationPolicy):
    """A ResourceValidationPolicy that runs the check registered for the resource's type token."""

    def __init__(
        self,
        name: str,
        description: str,
        checks: Mapping[str, Check],
        enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY,
        config_schema: PolicyConfigSchema | None = None,
        remediation_steps: str | None = None,
    ) -> None:
        super().__init__(
            name,
            description,
            enforcement_level=enforcement_level,
            config_schema=config_schema,
            remediation_steps=remediation_steps,
        )
        self.checks = dict(checks)
        self.defaults = {
            key: schema["default"]
            for key, schema in (config_schema.properties if config_schema else {}).items()
            if "default" in schema
        }

    @property
    def resource_types(self) -> frozenset[str]:
        """The type tokens this policy inspects."""
        return frozenset(self.checks)

    def validate(self, args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        """Report every problem the check for this resource's type finds."""
        check = self.checks.get(args.resource_type)
        if check is None:
            return
        config = {**self.defaults, **(args.get_config() or {})}
        for problem in check(args.props, config):
            report_violation(f"{args.resource_type} {args.name!r}: {problem}", args.urn)


def dig(props: Any, *path: str | int) -> Any:
    """The value at ``path`` (keys and list indexes), or None where any step is missing."""
    value = props
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, Sequence) or isinstance(value, str) or step >= len(value):
                return None
        elif not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


def items(value: Any) -> list[Any]:
    """A list of the value's items: None is empty, a lone string is one item."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def show(value: Any) -> str:
    """A value as the message shows it (missing values say so; JSON's 7.0 reads 7)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "unset" if value is None else repr(value)
