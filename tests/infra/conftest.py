"""Pulumi mocks for component tests: installed before any component module is imported."""

from __future__ import annotations

from tests.infra import pulumi_mocks

# Mocks (and empty config) must exist before `infra` registers anything; the
# test modules import the components after this conftest has run.
pulumi_mocks.install()
pulumi_mocks.set_config({})
