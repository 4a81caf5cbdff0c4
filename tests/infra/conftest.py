"""Pulumi mocks for component tests: installed before any component module is imported."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra import pulumi_mocks

def pytest_configure(config: pytest.Config) -> None:
    """Silence pulumi-gcp's import-time notices about its own renamed modules."""
    config.addinivalue_line("filterwarnings", "ignore:.*has been deprecated in favor of.*:DeprecationWarning")


# Mocks (and empty config) must exist before `infra` registers anything; the
# test modules import the components after this conftest has run.
pulumi_mocks.install()
pulumi_mocks.set_config({})


@pytest.fixture
def mocks() -> Iterator[pulumi_mocks.SpotshiftMocks]:
    """Fresh recording mocks and empty config for one test."""
    recorder = pulumi_mocks.install()
    pulumi_mocks.set_config({})
    yield recorder
    pulumi_mocks.set_config({})
