"""The one cloud-init renderer: env, units, secrets, and cloud-init's own schema validator."""

from __future__ import annotations

import re
import shutil
import subprocess

import pulumi
import pytest
import yaml

from infra.cloud_init import (
    ENV_FILE,
    REGISTRY_LOGIN_SCRIPT,
    SECRET_MARKERS,
    WORKER_STOP_TIMEOUT,
    CloudInitArgs,
    render_cloud_config,
    render_cloud_init,
)

GCP_WORKER = CloudInitArgs(
    cloud="gcp",
    role="worker",
    image="us-central1-docker.pkg.dev/proj/spotshift-images/spotshift@sha256:" + "ab" * 32,
    gcs_bucket="spotshift-state-1234567",
    gcs_project="proj-123",
    registry_server="us-central1-docker.pkg.dev",
)
GCP_API = CloudInitArgs(
    cloud="gcp", role="api", image="ghcr.io/example/spotshift:1.0.0", api_port=9090,
    gcs_bucket="spotshift-state-1234567", gcs_project="proj-123", read_only=True,
)
AZURE_API = CloudInitArgs(
    cloud="azure",
    role="api",
    image="spotshiftacr.azurecr.io/spotshift@sha256:" + "cd" * 32,
    azure_storage_account_url="https://spotshiftabc.blob.core.windows.net",
    azure_container="spotshift",
    azure_client_id="c1c1c1c1-0000-4000-8000-000000000001",
    registry_server="spotshiftacr.azurecr.io",
)
AZURE_WORKER = CloudInitArgs(
    cloud="azure",
    role="worker",
    image="ghcr.io/example/spotshift:1.0.0",
    azure_storage_account_url="https://spotshiftabc.blob.core.windows.net",
    azure_container="spotshift",
    azure_client_id="c1c1c1c1-0000-4000-8000-000000000001",
)
ALL = {"gcp-worker": GCP_WORKER, "gcp-api": GCP_API, "azure-api": AZURE_API, "azure-worker": AZURE_WORKER}


def parse(document: str) -> dict:
    assert document.startswith("#cloud-config\n"), "cloud-init needs the #cloud-config header on line 1"
    return yaml.safe_load(document)


def written(document: str, path: str) -> dict:
    files = {entry["path"]: entry for entry in parse(document)["write_files"]}
    assert path in files, f"{path} not written; files: {sorted(files)}"
    return files[path]


def env_of(document: str) -> dict[str, str]:
    content = written(document, ENV_FILE)["content"]
    return dict(line.split("=", 1) for line in content.splitlines())


def unit_of(document: str, role: str) -> str:
    return written(document, f"/etc/systemd/system/spotshift-{role}.service")["content"]


def exec_start(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


@pytest.mark.parametrize("name", sorted(ALL))
def test_rendered_document_round_trips_through_yaml(name: str) -> None:
    document = render_cloud_config(ALL[name])

    parsed = parse(document)

    assert yaml.safe_load(yaml.safe_dump(parsed)) == parsed
    assert parsed["packages"] == ["docker.io"]
    assert parsed["package_update"] is True
    assert ["systemctl", "enable", "--now", "docker.service"] in parsed["runcmd"]


@pytest.mark.parametrize("name", sorted(ALL))
def test_env_file_is_root_only(name: str) -> None:
    entry = written(render_cloud_config(ALL[name]), ENV_FILE)

    assert entry["permissions"] == "0600"
    assert entry["owner"] == "root:root"


def test_gcp_env_names_the_bucket_and_watches_gcp_evictions() -> None:
    env = env_of(render_cloud_config(GCP_WORKER))

    assert env == {
        "STORAGE_BACKEND": "gcp",
        "GCS_BUCKET": "spotshift-state-1234567",
        "GCS_PROJECT": "proj-123",
        "READ_ONLY": "false",
        "LEASE_SECONDS": "60",
        "WORKER_GRACE_SECONDS": "20",
        "EVICTION_WATCH": "gcp",
    }


def test_azure_env_names_account_container_and_managed_identity() -> None:
    env = env_of(render_cloud_config(AZURE_WORKER))

    assert env == {
        "STORAGE_BACKEND": "azure",
        "AZURE_STORAGE_ACCOUNT_URL": "https://spotshiftabc.blob.core.windows.net",
        "AZURE_CONTAINER": "spotshift",
        "AZURE_CLIENT_ID": "c1c1c1c1-0000-4000-8000-000000000001",
        "READ_ONLY": "false",
        "LEASE_SECONDS": "60",
        "WORKER_GRACE_SECONDS": "20",
        "EVICTION_WATCH": "azure",
    }


def test_read_only_flag_reaches_the_env_file() -> None:
    assert env_of(render_cloud_config(GCP_API))["READ_ONLY"] == "true"


def test_api_vm_runs_only_the_api_container_on_the_configured_port() -> None:
    document = render_cloud_config(GCP_API)

    start = exec_start(unit_of(document, "api"))

    assert start.endswith("--entrypoint spotshift ghcr.io/example/spotshift:1.0.0 api --host 0.0.0.0 --port 9090")
    assert f"--env-file {ENV_FILE}" in start
    assert "/etc/systemd/system/spotshift-worker.service" not in document
    assert ["systemctl", "enable", "--now", "spotshift-api.service"] in parse(document)["runcmd"]


def test_worker_gets_a_stop_timeout_inside_the_spot_notice() -> None:
    document = render_cloud_config(GCP_WORKER)
    unit = unit_of(document, "worker")

    start = exec_start(unit)

    assert start.endswith(f"--entrypoint spotshift {GCP_WORKER.image} worker")
    assert f"--stop-timeout {WORKER_STOP_TIMEOUT}" in start
    assert WORKER_STOP_TIMEOUT == 25
    assert int(env_of(document)["WORKER_GRACE_SECONDS"]) < WORKER_STOP_TIMEOUT < 30
    assert f"TimeoutStopSec={WORKER_STOP_TIMEOUT + 10}" in unit
    # A worker that drained after an eviction notice exits 0 and stays down.
    assert "Restart=on-failure" in unit
    assert "/etc/systemd/system/spotshift-api.service" not in document


def test_api_container_restarts_always() -> None:
    assert "Restart=always" in unit_of(render_cloud_config(AZURE_API), "api")


def test_grace_longer_than_the_stop_timeout_is_refused() -> None:
    too_long = CloudInitArgs(**{**GCP_WORKER.__dict__, "worker_grace_seconds": WORKER_STOP_TIMEOUT})

    with pytest.raises(ValueError, match="worker_grace_seconds"):
        render_cloud_config(too_long)


def test_gcp_registry_login_uses_the_vm_service_account_token() -> None:
    document = render_cloud_config(GCP_WORKER)

    script = written(document, REGISTRY_LOGIN_SCRIPT)
    unit = unit_of(document, "worker")

    assert script["permissions"] == "0700"
    assert "computeMetadata/v1/instance/service-accounts/default/token" in script["content"]
    assert '"us-central1-docker.pkg.dev"' in script["content"]
    assert f"ExecStartPre=-{REGISTRY_LOGIN_SCRIPT}" in unit


def test_azure_registry_login_exchanges_the_managed_identity_token() -> None:
    script = written(render_cloud_config(AZURE_API), REGISTRY_LOGIN_SCRIPT)["content"]

    assert "metadata/identity/oauth2/token" in script
    assert "client_id=c1c1c1c1-0000-4000-8000-000000000001" in script
    assert "https://spotshiftacr.azurecr.io/oauth2/exchange" in script


def test_public_image_needs_no_registry_login() -> None:
    document = render_cloud_config(AZURE_WORKER)

    assert REGISTRY_LOGIN_SCRIPT not in document


@pytest.mark.parametrize("name", sorted(ALL))
def test_document_carries_no_credentials(name: str) -> None:
    document = render_cloud_config(ALL[name])

    for marker in (*SECRET_MARKERS, "AccountKey=", "sig=", "-----BEGIN", "password", "CONNECTION_STRING"):
        assert marker.lower() not in document.lower(), f"{name} cloud-init contains {marker!r}"


@pytest.mark.parametrize(
    "value",
    [
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
        "https://a.blob.core.windows.net/c?sv=2022-11-02&sig=abc",
        "-----BEGIN " + "PRIVATE KEY-----",  # split so secret scanners do not take the test for a key
    ],
)
def test_a_credential_in_a_setting_is_refused(value: str) -> None:
    leaky = CloudInitArgs(**{**AZURE_WORKER.__dict__, "azure_storage_account_url": value})

    with pytest.raises(ValueError, match="AZURE_STORAGE_ACCOUNT_URL"):
        render_cloud_config(leaky)


def test_missing_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="gcs_bucket"):
        render_cloud_config(CloudInitArgs(cloud="gcp", role="api", image="x/y:1", gcs_project="p"))


@pytest.mark.parametrize("name", sorted(ALL))
def test_cloud_init_schema_validator_accepts_the_document(name: str, tmp_path) -> None:
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:  # not a skip: `make test` installs it
        pytest.fail("cloud-init is not installed (not on PyPI): run `make system-tools` (installs it with apt)")
    path = tmp_path / f"{name}.yaml"
    path.write_text(render_cloud_config(ALL[name]))

    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=120
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # cloud-init 23.1+ prints "Valid schema"; 22.x (Debian 12) prints "Valid cloud-config".
    assert re.search(r"Valid (schema|cloud-config)", output), output


@pulumi.runtime.test
def test_renderer_resolves_outputs_into_one_document(mocks):
    bucket = pulumi.Output.from_input("bucket-from-output")
    image = pulumi.Output.from_input("ghcr.io/example/spotshift:2.0.0")

    document = render_cloud_init(
        CloudInitArgs(cloud="gcp", role="worker", image=image, gcs_bucket=bucket, gcs_project="proj-123")
    )

    def check(text: str) -> None:
        assert env_of(text)["GCS_BUCKET"] == "bucket-from-output"
        assert "ghcr.io/example/spotshift:2.0.0 worker" in exec_start(unit_of(text, "worker"))

    return document.apply(check)
