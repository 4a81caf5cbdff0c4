"""stacks/__main__.py: the program is chosen by `spotshift:cloud`, never by the stack name."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi
import pytest

from stacks import program_for
from stacks._config import ConfigError
from tests.infra.pulumi_mocks import settled
from tests.stacks.conftest import AZURE_CONFIG, GCP_CONFIG

MAIN = Path(__file__).resolve().parents[2] / "stacks" / "__main__.py"


def run_main() -> None:
    runpy.run_path(str(MAIN), run_name="__main__")


@pytest.mark.parametrize(
    ("config", "cloud_resource", "other_cloud"),
    [(GCP_CONFIG, "gcp:storage/bucket:Bucket", "azure-native:"), (AZURE_CONFIG, "azure-native:storage:StorageAccount", "gcp:")],
)
def test_cloud_key_picks_the_program(mocks, configure, exports, config, cloud_resource, other_cloud):
    configure(config)

    @pulumi.runtime.test
    def deploy():
        run_main()
        return settled()

    deploy()

    assert len(mocks.of_type(cloud_resource)) == 1
    assert not [r.type for r in mocks.registrations if r.type.startswith(other_cloud)]
    assert "api_url" in exports


@pytest.mark.parametrize("cloud", ["aws", "", None])
def test_unknown_cloud_fails_naming_the_key_and_the_choices(mocks, configure, exports, cloud):
    configure(GCP_CONFIG, cloud=cloud)

    @pulumi.runtime.test
    def deploy():
        with pytest.raises(ConfigError, match=r"spotshift:cloud must be one of gcp, azure"):
            run_main()
        return pulumi.Output.from_input(None)

    deploy()

    assert mocks.registrations == []


def test_cloud_value_is_matched_without_case_or_spaces():
    assert program_for(" GCP ").__module__ == "stacks.gcp_source"
    assert program_for("azure").__module__ == "stacks.azure_target"


def test_config_error_prints_without_a_traceback():
    # pulumi.RunError ends the program with its message only.
    assert issubclass(ConfigError, pulumi.RunError)
