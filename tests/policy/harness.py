"""Run the pack's policies the way the analyzer does, without starting its server.

``PolicyPack()`` starts a gRPC server and blocks, so tests call each policy's
``validate`` with hand-built ``ResourceValidationArgs`` / ``StackValidationArgs``.
Props take the analyzer's path (a protobuf Struct, pulumi_policy's decoder, its
unknown-checking proxy), so a rule that expects ints or treats the Mapping proxy
as a dict fails here as it would under the CLI.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from tests.infra.pulumi_mocks import PROJECT, Registration

STACK = "test"


def urn(typ: str, name: str) -> str:
    """The URN the engine would give a top-level resource of this test stack."""
    return f"urn:pulumi:{STACK}::{PROJECT}::{typ}::{name}"


def options(protect: bool = False, parent: str | None = None) -> PolicyResourceOptions:
    """Resource options as the analyzer hands them over."""
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def as_analyzed(props: Mapping[str, Any]) -> Any:
    """``props`` as the analyzer hands them to a rule: through a protobuf Struct (every number a
    double), decoded by pulumi_policy and wrapped in its unknown-checking proxy."""
    value = struct_pb2.Struct()
    value.update(copy.deepcopy(dict(props)))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(value)))


def resource_args(
    typ: str,
    props: Mapping[str, Any],
    name: str = "subject",
    config: Mapping[str, Any] | None = None,
    protect: bool = False,
) -> ResourceValidationArgs:
    """``ResourceValidationArgs`` for one resource with these (wire-name) props and options."""
    return ResourceValidationArgs(typ, as_analyzed(props), urn(typ, name), name, options(protect), None, config)


def violations(policy: ResourceValidationPolicy, args: ResourceValidationArgs) -> list[str]:
    """Every message ``policy`` reports for ``args``."""
    reported: list[str] = []
    result = policy.validate(args, lambda message, urn=None: reported.append(message))
    assert result is None, f"{policy.name}: validate returned an awaitable the harness does not run"
    return reported


def check(
    policy: ResourceValidationPolicy,
    typ: str,
    props: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    protect: bool = False,
) -> list[str]:
    """The violations ``policy`` reports for one resource of ``typ`` with ``props``."""
    return violations(policy, resource_args(typ, props, config=config, protect=protect))


def stack_resource(typ: str, name: str, props: Mapping[str, Any], dependencies: Iterable[PolicyResource] = ()) -> PolicyResource:
    """A ``PolicyResource`` as ``AnalyzeStack`` builds it."""
    return PolicyResource(
        typ, as_analyzed(props), urn(typ, name), name, options(), None, None,
        list(dependencies), {},
    )


def stack_violations(policy: StackValidationPolicy, resources: list[PolicyResource]) -> list[str]:
    """Every message a stack policy reports for ``resources``."""
    reported: list[str] = []
    policy.validate(StackValidationArgs(resources, None), lambda message, urn=None: reported.append(message))
    return reported


@dataclass
class RuleResult:
    """What one policy found in one deployed stack."""

    checked: int = 0
    failed: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Resources (or, for a stack policy, stacks) the rule inspected and did not report."""
        return self.checked - self.failed


def evaluate(policies: Iterable[Policy], registrations: list[Registration]) -> dict[str, RuleResult]:
    """Run every policy over a deployment's registrations (custom resources, inputs as the engine got them)."""
    custom = [r for r in registrations if not r.type.startswith(("spotshift:", "pulumi:"))]
    results: dict[str, RuleResult] = {}
    # The mocks record dependencies by URN, parented ones included; match them on the type::name tail.
    by_tail = {f"{r.type}::{r.name}": stack_resource(r.type, r.name, r.inputs) for r in custom}
    for registration in custom:
        resource = by_tail[f"{registration.type}::{registration.name}"]
        for dependency in registration.options.get("dependencies", []):
            tail = "::".join(dependency.rsplit("::", 2)[-2:]).rpartition("$")[2]
            if tail in by_tail:
                resource.dependencies.append(by_tail[tail])
    for policy in policies:
        result = results.setdefault(policy.name, RuleResult())
        if isinstance(policy, StackValidationPolicy):
            result.checked = 1
            result.violations = stack_violations(policy, list(by_tail.values()))
            result.failed = int(bool(result.violations))
            continue
        assert isinstance(policy, ResourceValidationPolicy)
        for registration in custom:
            args = resource_args(
                registration.type, registration.inputs, registration.name, protect=registration.options.get("protect", False)
            )
            found = violations(policy, args)
            result.checked += registration.type in getattr(policy, "resource_types", ())
            result.failed += bool(found)
            result.violations += found
    return results
