"""Policy-pack tests: the stacks' mocks (installed before any stack module is imported) and a pass-count report."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import pytest

# Importing the stack tests' conftest installs the recording mocks before `stacks` is imported.
from tests.stacks.conftest import exports  # noqa: F401 - a fixture, re-exported for these tests

#: pulumi-policy lives in .venv-policy (it pins protobuf 5, see the Makefile); in another venv these tests
#: are not collected, and the run says so.
POLICY_SDK = find_spec("pulumi_policy") is not None
collect_ignore_glob = [] if POLICY_SDK else ["test_*.py"]

#: (stack, rule) -> (passed, checked), filled by the stack tests and printed after the run.
PASS_COUNTS: dict[tuple[str, str], tuple[int, int]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how many resources of each stack each rule inspected and passed."""
    if not POLICY_SDK:
        terminalreporter.write_line(
            "tests/policy not collected: pulumi-policy is not installed here; "
            "`make policy-setup && .venv-policy/bin/python -m pytest tests/policy` runs them"
        )
    if not PASS_COUNTS:
        return
    terminalreporter.section("policy pack: passed/checked resources per stack and rule")
    stacks = sorted({stack for stack, _ in PASS_COUNTS})
    rules = list(dict.fromkeys(rule for _, rule in PASS_COUNTS))
    width = max(len(rule) for rule in rules)
    terminalreporter.write_line(" " * width + "".join(f"  {stack:>24}" for stack in stacks))
    for rule in rules:
        cells = []
        for stack in stacks:
            passed, checked = PASS_COUNTS.get((stack, rule), (0, 0))
            cells.append(f"  {f'{passed}/{checked}':>24}")
        terminalreporter.write_line(f"{rule:<{width}}" + "".join(cells))


@pytest.fixture
def pass_counts() -> dict[tuple[str, str], tuple[int, int]]:
    """Where a stack test records its per-rule counts."""
    return PASS_COUNTS
