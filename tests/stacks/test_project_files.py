"""Pulumi.yaml and the two stack files: every key declared, defaults agreeing with the code, stacks runnable."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
import pytest
import yaml

from stacks import azure_target, gcp_source
from stacks._config import DEFAULTS
from tests.infra.pulumi_mocks import settled
from tests.stacks.conftest import SSH_KEY

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEYS = {"gcp:project", "gcp:region", "gcp:zone", "azure-native:location"}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_project_runs_the_stacks_directory_from_the_venv():
    project = load("Pulumi.yaml")

    assert project["name"] == "spotshift"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert project["main"] == "stacks/"
    assert (ROOT / project["main"] / "__main__.py").is_file()


def test_the_language_host_and_the_provider_launcher_resolve_the_same_venv():
    project = load("Pulumi.yaml")
    venv = project["runtime"]["options"]["virtualenv"]

    # pulumi-language-python: relative to the project root (toolchain.resolveVirtualEnvironmentPath).
    for_program = ROOT / venv
    # pulumi-resource-pulumi-python: $PWD/$PULUMI_RUNTIME_VIRTUALENV, $PWD being `main`'s directory.
    for_providers = ROOT / project["main"] / venv

    assert os.readlink(for_providers) == os.path.join("..", venv), "stacks/.venv is the committed symlink"
    assert (for_program / "bin" / "python").is_file(), "run `make setup` first"
    assert (for_providers / "bin" / "python").is_file()
    assert for_providers.resolve() == for_program.resolve()


def test_every_spotshift_key_is_declared_with_the_codes_default():
    declared = load("Pulumi.yaml")["config"]

    assert set(declared) == {"spotshift:cloud"} | {f"spotshift:{key}" for key in DEFAULTS}
    for key, default in DEFAULTS.items():
        entry = declared[f"spotshift:{key}"]
        assert entry["description"], key
        assert entry["default"] == default, key
        expected_type = {bool: "boolean", int: "integer", list: "array", str: "string"}[type(default)]
        assert entry["type"] == expected_type, key
    assert "default" not in declared["spotshift:cloud"], "each stack must choose its cloud"


@pytest.mark.parametrize(("name", "cloud"), [("Pulumi.gcp-source.yaml", "gcp"), ("Pulumi.azure-target.yaml", "azure")])
def test_stack_files_only_use_known_keys_with_safe_values(name, cloud):
    config = load(name)["config"]
    declared = set(load("Pulumi.yaml")["config"])

    assert config["spotshift:cloud"] == cloud
    assert set(config) <= declared | PROVIDER_KEYS, set(config) - declared - PROVIDER_KEYS
    assert config["spotshift:allowedCidrs"] == []
    assert config["spotshift:sshSourceCidr"] == ""
    assert config.get("spotshift:buildImage") is False


@pytest.mark.parametrize(
    ("name", "program", "required"),
    [
        ("Pulumi.gcp-source.yaml", gcp_source, {"gcp:project": "spotshift-test", "spotshift:image": "ghcr.io/example/spotshift:1"}),
        (
            "Pulumi.azure-target.yaml",
            azure_target,
            {"spotshift:sshPublicKey": SSH_KEY, "spotshift:image": "ghcr.io/example/spotshift:1"},
        ),
    ],
)
def test_stack_file_runs_once_the_required_keys_are_set(mocks, configure, exports, name, program, required):
    configure({**load(name)["config"], **required})

    @pulumi.runtime.test
    def deploy():
        program.main()
        return settled()

    deploy()

    assert exports["api_url"]
    assert len(mocks.registrations) > 10
