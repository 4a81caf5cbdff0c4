"""Entry point the Pulumi CLI runs for `--policy-pack policy`; the rules live in spotshift_policy."""

from pulumi_policy import EnforcementLevel, PolicyPack

from spotshift_policy import POLICIES

# PolicyPack starts the analyzer's gRPC server and blocks: only when the CLI runs the pack.
if __name__ == "__main__":
    PolicyPack(name="spotshift-baseline", enforcement_level=EnforcementLevel.MANDATORY, policies=list(POLICIES))
