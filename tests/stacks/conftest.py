"""Stack-program tests: mocks installed before the stack modules are imported, plus a deploy helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pytest

from stacks._config import ConfigError
from tests.infra import pulumi_mocks

# Mocks (and empty config) must exist before `stacks`/`infra` register anything.
pulumi_mocks.install()
pulumi_mocks.set_config({})

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockKeyForTestsOnly spotshift@test"

#: The smallest config each stack accepts; tests add to it.
GCP_CONFIG: dict[str, Any] = {
    "spotshift:cloud": "gcp",
    "gcp:project": "spotshift-test",
    "gcp:region": "us-central1",
    "gcp:zone": "us-central1-b",
    "spotshift:image": "ghcr.io/example/spotshift:1.0.0",
}
AZURE_CONFIG: dict[str, Any] = {
    "spotshift:cloud": "azure",
    "azure-native:location": "westeurope",
    "spotshift:image": "ghcr.io/example/spotshift:1.0.0",
    "spotshift:sshPublicKey": SSH_KEY,
}


@pytest.fixture
def expected_config_errors() -> Iterator[None]:
    """For tests where a ConfigError fails several Outputs at once: only one reaches the caller, and
    asyncio would print the others as "Future exception was never retrieved" whenever they are
    collected (often at interpreter exit). Those, and only those, are dropped, for the rest of the run."""
    loop = asyncio.get_event_loop()
    previous = loop.get_exception_handler()

    def handler(event_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), ConfigError):
            return
        if previous is not None:
            previous(event_loop, context)
        else:
            event_loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every `pulumi.export(name, value)` the program makes, by name."""
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))
    return exported


@pytest.fixture
def configure() -> Callable[..., None]:
    """Set the stack config: ``configure(GCP_CONFIG, workerCount=3)`` (bare names are spotshift keys)."""

    def apply(base: dict[str, Any], **overrides: Any) -> None:
        values = dict(base)
        for key, value in overrides.items():
            full = key if ":" in key else f"spotshift:{key}"
            if value is None:
                values.pop(full, None)
            else:
                values[full] = value
        pulumi_mocks.set_config(values)

    return apply


def resolved(outputs: dict[str, Any]) -> pulumi.Output[dict[str, Any]]:
    """The program's exports as plain values, once every resource is registered."""
    return pulumi.Output.all(pulumi_mocks.settled(), pulumi.Output.from_input(outputs)).apply(lambda pair: pair[1])
