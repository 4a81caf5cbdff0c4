"""Every rule of the pack against both stacks as the programs declare them under mocks (every azure-target stage)."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from infra import images
from policy.spotshift_policy import POLICIES
from stacks import azure_target, gcp_source
from tests.infra import pulumi_mocks
from tests.policy.harness import RuleResult, evaluate
from tests.stacks.conftest import AZURE_CONFIG, GCP_CONFIG, resolved

SOURCE_STACK = "acme/spotshift/gcp-source"
#: What a frozen gcp-source stack exports to azure-target's sync and cutover stages.
SOURCE_OUTPUTS = {"bucket_name": "spotshift-state-4f2a", "project": "acme-prod", "frozen": True,
                  "freeze_marker": "spotshift-freeze/marker.json"}
#: The cutover's record, as a decommissioned stage is given it.
MIGRATION_RECORD = {
    "source_stack": SOURCE_STACK,
    "source_bucket": "spotshift-state-4f2a",
    "manifest_digest": pulumi_mocks.MANIFEST_DIGEST,
    "objects_migrated": 0,
    "bytes_migrated": 0,
    "completed_at": "2026-12-01T20:00:00Z",
    "sync_round": 1,
    "verified": True,
}
#: The config each azure-target stage needs on top of AZURE_CONFIG; a stage missing here fails its test.
STAGE_CONFIG: dict[str, dict[str, Any]] = {
    "provision": {},
    "sync": {"sourceStack": SOURCE_STACK, "syncRound": 1, "storageAllowedCidrs": ["203.0.113.7"]},
    "cutover": {"sourceStack": SOURCE_STACK, "syncRound": 2, "storageAllowedCidrs": ["203.0.113.7"]},
    "decommissioned": {"migrationRecord": json.dumps(MIGRATION_RECORD)},
}
#: The API and SSH opened to named networks, and the image built into each cloud's own registry.
OPEN_AND_BUILT = {
    "spotshift:allowedCidrs": ["203.0.113.0/24"],
    "spotshift:sshSourceCidr": "192.0.2.4/32",
    "spotshift:buildImage": True,
    "spotshift:image": None,
}
#: What each stack is run with: the defaults a user gets, the gcp-source freeze the cutover needs,
#: every azure-target stage, and both clouds with their optional firewall rules and registries.
STACKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "gcp-source": (gcp_source, GCP_CONFIG),
    "gcp-source-frozen": (gcp_source, {**GCP_CONFIG, "spotshift:freeze": True}),
    "gcp-source-open-built": (gcp_source, {**GCP_CONFIG, **OPEN_AND_BUILT}),
    **{
        f"azure-target-{stage}": (azure_target, {**AZURE_CONFIG, "spotshift:migrationStage": stage})
        for stage in azure_target.MIGRATION_STAGES
    },
    "azure-target-open-built": (azure_target, {**AZURE_CONFIG, **OPEN_AND_BUILT}),
}

_RESULTS: dict[str, dict[str, RuleResult]] = {}


def deployed(stack: str) -> dict[str, RuleResult]:
    """Run ``stack``'s program once under fresh mocks and every policy over what it registered."""
    if stack not in _RESULTS:
        program, config = STACKS[stack] if stack in STACKS else LOOSENED[stack][:2]
        stage = config.get("spotshift:migrationStage")
        if stage is not None:
            assert stage in STAGE_CONFIG, f"azure-target stage {stage!r} is new: add the config it needs to STAGE_CONFIG"
            config = {**config, **{f"spotshift:{key}": value for key, value in STAGE_CONFIG[stage].items()}}
        config = {key: value for key, value in config.items() if value is not None}
        mocks = pulumi_mocks.install()
        mocks.stack_outputs[SOURCE_STACK] = dict(SOURCE_OUTPUTS)
        pulumi_mocks.set_config(config)

        @pulumi.runtime.test
        def deploy():
            return resolved(program.main())

        with pytest.MonkeyPatch.context() as patch:
            # The ACR token exchange is an HTTP call to the registry; the stack tests stub it the same way.
            patch.setattr(images, "exchange_acr_refresh_token", lambda *args: "acr-refresh-token")
            try:
                deploy()
            finally:
                pulumi_mocks.set_config({})
        _RESULTS[stack] = evaluate(POLICIES, mocks.registrations)
    return _RESULTS[stack]


@pytest.mark.parametrize("rule", [policy.name for policy in POLICIES])
@pytest.mark.parametrize("stack", list(STACKS))
def test_the_stack_as_declared_meets_the_rule(stack, rule, exports, pass_counts):
    result = deployed(stack)[rule]

    pass_counts[(stack, rule)] = (result.passed, result.checked)
    assert result.violations == [], f"{stack} breaks {rule}:\n" + "\n".join(result.violations)


@pytest.mark.parametrize("stack", list(STACKS))
def test_the_baseline_rules_see_resources_of_every_stack(stack, exports):
    results = deployed(stack)

    checked = {rule for rule, result in results.items() if result.checked}
    cloud = "gcp" if stack.startswith("gcp") else "azure"
    expected = {
        "gcp": {"spot-everywhere", "no-public-storage", "data-protection-on", "no-secrets-in-user-data", "subnet-flow-logs",
                "workers-without-public-ip", "data-protection-configured"},
        "azure": {"spot-everywhere", "no-public-storage", "tls12-https-only", "shared-keys-off", "no-password-login",
                  "no-world-open-ingress", "identities-scoped-to-one-store", "encryption-at-host", "no-secrets-in-user-data",
                  "storage-deny-by-default", "no-vm-extension-operations", "data-protection-on",
                  "data-protection-configured"},
    }[cloud]

    assert expected <= checked, f"{stack}: rules that inspected nothing: {sorted(expected - checked)}"


#: Config choices that leave the baseline on purpose, and exactly the rules each must trip (and no other).
LOOSENED: dict[str, tuple[Any, dict[str, Any], set[str]]] = {
    "gcp-source-loosened": (
        gcp_source,
        {**GCP_CONFIG, "spotshift:workerPublicIp": True, "spotshift:flowLogs": False, "spotshift:bucketVersioning": False,
         "spotshift:provisioningModel": "preemptible", "spotshift:allowedCidrs": ["0.0.0.0/0"]},
        {"workers-without-public-ip", "subnet-flow-logs", "data-protection-on", "spot-everywhere", "no-world-open-ingress"},
    ),
    "azure-target-loosened": (
        azure_target,
        {**AZURE_CONFIG, "spotshift:encryptionAtHost": False, "spotshift:allowSharedKeyAccess": True,
         "spotshift:protectStorage": False, "spotshift:sshSourceCidr": "0.0.0.0/0"},
        {"encryption-at-host", "shared-keys-off", "data-stores-protected", "no-world-open-ingress"},
    ),
}


@pytest.mark.parametrize("stack", list(LOOSENED))
def test_config_that_leaves_the_baseline_trips_exactly_its_rules(stack, exports):
    results = deployed(stack)

    tripped = {rule for rule, result in results.items() if result.violations}

    assert tripped == LOOSENED[stack][2], {rule: results[rule].violations for rule in tripped}
