"""The pack started the way the Pulumi CLI starts a Python policy pack, spoken to over the analyzer gRPC API.

The language host runs ``python -u -m pulumi.policy <engine> <pack dir>`` from the
pack's folder, reads the port the pack prints and calls it; props travel as a
protobuf Struct (numbers as doubles), so this also checks that the rules hold
up on what the analyzer really decodes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy.spotshift_policy import POLICIES
from policy.spotshift_policy import types as t
from tests.policy.harness import urn
from tests.policy.test_rules import GOOD, changed

PACK_DIR = Path(__file__).resolve().parents[2] / "policy"


def struct(props: dict[str, Any]) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update(props)
    return value


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack in its own process, as the language host starts it; stopped afterwards."""
    process = subprocess.Popen(
        # The engine address is only used for logging; nothing is logged here.
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(PACK_DIR)],
        cwd=PACK_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.isdigit(), f"the pack printed {line!r} instead of its port; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        with grpc.insecure_channel(f"127.0.0.1:{line}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub, typ: str, props: dict[str, Any], name: str = "subject", protect: bool = True
) -> list[Any]:
    request = analyzer_pb2.AnalyzeRequest(
        type=typ, properties=struct(props), urn=urn(typ, name), name=name,
        options=analyzer_pb2.AnalyzerResourceOptions(protect=protect),
    )
    return list(stub.Analyze(request).diagnostics)


def test_the_pack_describes_every_rule_with_its_enforcement_level(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())

    levels = {policy.name: analyzer_pb2.EnforcementLevel.Name(policy.enforcementLevel) for policy in info.policies}

    assert info.name == "spotshift-baseline"
    assert list(levels) == [policy.name for policy in POLICIES]
    assert {name for name, level in levels.items() if level == "ADVISORY"} == {
        "subnet-flow-logs", "workers-without-public-ip"
    }
    assert set(levels.values()) == {"ADVISORY", "MANDATORY"}


def test_good_resources_pass_and_a_bad_one_is_a_mandatory_violation(analyzer):
    good = [diagnostic for typ in (t.AZURE_VM, t.AZURE_ACCOUNT, t.AZURE_BLOB_SERVICE, t.GCP_BUCKET, t.GCP_TEMPLATE)
            for diagnostic in analyze(analyzer, typ, GOOD[typ])]
    bad = analyze(analyzer, t.AZURE_ACCOUNT, changed(t.AZURE_ACCOUNT, "minimumTlsVersion", to="TLS1_0"))

    assert good == []
    assert [(d.policyName, analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel)) for d in bad] == [
        ("tls12-https-only", "MANDATORY")
    ]
    assert "minimumTlsVersion is 'TLS1_0'" in bad[0].message and bad[0].urn == urn(t.AZURE_ACCOUNT, "subject")


def test_the_protect_option_reaches_the_rule(analyzer):
    unprotected = analyze(analyzer, t.AZURE_CONTAINER, GOOD[t.AZURE_CONTAINER], protect=False)

    assert [d.policyName for d in unprotected] == ["data-stores-protected"]
    assert analyze(analyzer, t.AZURE_CONTAINER, GOOD[t.AZURE_CONTAINER]) == []


def test_the_stack_check_runs_over_the_whole_stack(analyzer):
    account = analyzer_pb2.AnalyzerResource(
        type=t.AZURE_ACCOUNT, properties=struct(GOOD[t.AZURE_ACCOUNT]), urn=urn(t.AZURE_ACCOUNT, "data"), name="data"
    )

    diagnostics = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[account])).diagnostics

    assert [d.policyName for d in diagnostics] == ["data-protection-configured"]


def test_a_policy_config_file_lifts_one_rule_and_tunes_another(analyzer):
    vm = changed(t.AZURE_VM, "securityProfile", "encryptionAtHost", to=False)
    short = changed(t.AZURE_BLOB_SERVICE, "deleteRetentionPolicy", "days", to=3)
    short["containerDeleteRetentionPolicy"]["days"] = 3
    before = [d.policyName for d in analyze(analyzer, t.AZURE_VM, vm) + analyze(analyzer, t.AZURE_BLOB_SERVICE, short)]

    analyzer.Configure(
        analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                "encryption-at-host": analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.DISABLED),
                "data-protection-on": analyzer_pb2.PolicyConfig(
                    enforcementLevel=analyzer_pb2.MANDATORY, properties=struct({"minRetentionDays": 3})
                ),
            }
        )
    )
    try:
        after = [d.policyName for d in analyze(analyzer, t.AZURE_VM, vm) + analyze(analyzer, t.AZURE_BLOB_SERVICE, short)]
    finally:
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest())

    assert before == ["encryption-at-host", "data-protection-on", "data-protection-on"]
    assert after == []
