"""One cloud-init document for both clouds: Docker, the env file, and one systemd unit per container.

The same Ubuntu 24.04 LTS image family boots on GCP and Azure, so one renderer
serves both; only the storage settings, the eviction watcher and the registry
login differ. The document carries identifiers only (bucket, account URL,
container, managed identity client id): credentials come from the VM's own
identity at run time, because user data is readable by every process on the VM
and is stored in plain text by both clouds.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import yaml

Cloud = Literal["gcp", "azure"]
Role = Literal["api", "worker"]

CLOUDS: tuple[Cloud, ...] = ("gcp", "azure")
ROLES: tuple[Role, ...] = ("api", "worker")

ENV_FILE = "/etc/spotshift/spotshift.env"
REGISTRY_LOGIN_SCRIPT = "/usr/local/bin/spotshift-registry-login"
DOCKER = "/usr/bin/docker"

#: Seconds Docker waits after SIGTERM before killing the worker. Spot notice is
#: ~30 s on both clouds, so the worker's drain must end before this.
WORKER_STOP_TIMEOUT = 25

#: Never rendered into user data; a value containing one of these is a credential.
SECRET_MARKERS = ("AccountKey=", "SharedAccessSignature", "sig=", "-----BEGIN", "password")

_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


@dataclass
class CloudInitArgs:
    """What one VM runs; every field may be a Pulumi Input except the three choices."""

    cloud: Cloud
    """Where the VM runs: picks STORAGE_BACKEND, EVICTION_WATCH and the registry login."""
    role: Role
    """Which container this VM runs: the API or the worker."""
    image: pulumi.Input[str]
    """Container image reference (both roles run the same image)."""
    api_port: pulumi.Input[int] = 8080
    """Port the API listens on (host network)."""
    read_only: pulumi.Input[bool] = False
    """Cutover freeze: the API refuses writes and workers claim nothing."""
    lease_seconds: pulumi.Input[float] = 60
    """How long a claimed job stays leased without renewal."""
    worker_grace_seconds: pulumi.Input[float] = 20
    """How long a draining worker may finish its job; must end before WORKER_STOP_TIMEOUT."""
    gcs_bucket: pulumi.Input[str] | None = None
    """GCS bucket (cloud ``gcp``)."""
    gcs_project: pulumi.Input[str] | None = None
    """GCP project of the bucket (cloud ``gcp``)."""
    azure_storage_account_url: pulumi.Input[str] | None = None
    """``https://<account>.blob.core.windows.net`` (cloud ``azure``)."""
    azure_container: pulumi.Input[str] | None = None
    """Blob container (cloud ``azure``)."""
    azure_client_id: pulumi.Input[str] | None = None
    """Client id of the VM's user-assigned identity, so DefaultAzureCredential picks it (cloud ``azure``)."""
    registry_server: pulumi.Input[str] | None = None
    """Private registry host to log in to with the VM's identity; None for a public image."""


def render_cloud_init(args: CloudInitArgs) -> pulumi.Output[str]:
    """Resolve the Inputs in ``args`` and render the ``#cloud-config`` document."""
    fields = {field.name: getattr(args, field.name) for field in dataclasses.fields(args)}
    return pulumi.Output.all(**fields).apply(lambda resolved: render_cloud_config(CloudInitArgs(**resolved)))


def render_cloud_config(args: CloudInitArgs) -> str:
    """Render the ``#cloud-config`` document from plain values (raises ValueError on a bad value)."""
    if args.cloud not in CLOUDS:
        raise ValueError(f"cloud must be one of {', '.join(CLOUDS)} (got {args.cloud!r})")
    if args.role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {args.role!r})")
    image = str(args.image or "")
    if not _IMAGE_REF.match(image):
        raise ValueError(f"image must be a container image reference (got {image!r})")
    if not 0 < float(args.worker_grace_seconds) < WORKER_STOP_TIMEOUT:
        raise ValueError(
            f"worker_grace_seconds must be between 0 and {WORKER_STOP_TIMEOUT} "
            f"(the worker's docker stop timeout), got {args.worker_grace_seconds}"
        )

    files: list[dict[str, Any]] = [
        {"path": ENV_FILE, "owner": "root:root", "permissions": "0600", "content": env_file(args)},
    ]
    if args.registry_server:
        files.append(
            {
                "path": REGISTRY_LOGIN_SCRIPT,
                "owner": "root:root",
                "permissions": "0700",
                "content": _registry_login_script(args),
            }
        )
    unit = f"spotshift-{args.role}.service"
    files.append(
        {
            "path": f"/etc/systemd/system/{unit}",
            "owner": "root:root",
            "permissions": "0644",
            "content": _unit(args, image),
        }
    )
    document = {
        "package_update": True,
        "packages": ["docker.io"],
        "write_files": files,
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "docker.service"],
            ["systemctl", "enable", "--now", unit],
        ],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=4096)


def workload_env(args: CloudInitArgs) -> dict[str, str]:
    """The environment both containers read (names are app/settings.py's contract)."""
    env = {"STORAGE_BACKEND": args.cloud}
    if args.cloud == "gcp":
        env["GCS_BUCKET"] = _required(args.gcs_bucket, "gcs_bucket")
        env["GCS_PROJECT"] = _required(args.gcs_project, "gcs_project")
    else:
        env["AZURE_STORAGE_ACCOUNT_URL"] = _required(args.azure_storage_account_url, "azure_storage_account_url")
        env["AZURE_CONTAINER"] = _required(args.azure_container, "azure_container")
        env["AZURE_CLIENT_ID"] = _required(args.azure_client_id, "azure_client_id")
    env.update(
        READ_ONLY="true" if args.read_only else "false",
        LEASE_SECONDS=_number(args.lease_seconds),
        WORKER_GRACE_SECONDS=_number(args.worker_grace_seconds),
        EVICTION_WATCH=args.cloud,
    )
    for name, value in env.items():
        if "\n" in value or any(marker.lower() in value.lower() for marker in SECRET_MARKERS):
            raise ValueError(f"{name} must be a single-line identifier, never a credential")
    return env


def env_file(args: CloudInitArgs) -> str:
    """The Docker ``--env-file`` body: ``NAME=value`` lines, no quoting (Docker keeps quotes literally)."""
    return "".join(f"{name}={value}\n" for name, value in workload_env(args).items())


def _required(value: Any, name: str) -> str:
    if value is None or not str(value).strip():
        raise ValueError(f"{name} is required for this cloud")
    return str(value).strip()


def _number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def _unit(args: CloudInitArgs, image: str) -> str:
    if args.role == "api":
        name = "spotshift-api"
        # The API only serves requests; Docker's default 10 s stop is plenty.
        run_flags = ""
        command = f"api --host 0.0.0.0 --port {int(args.api_port)}"
        restart, stop_seconds = "always", 20
    else:
        name = "spotshift-worker"
        # --stop-timeout: SIGTERM starts the drain (WORKER_GRACE_SECONDS), the
        # kill comes only after WORKER_STOP_TIMEOUT, inside the ~30 s spot notice.
        # WORKER_ID=%H names the worker after the VM in leases and logs.
        run_flags = f"--stop-timeout {WORKER_STOP_TIMEOUT} --env WORKER_ID=%H "
        command = "worker"
        # A worker that drained after an eviction notice exits 0 and must stay
        # down until the VM stops; crashes and lost storage (non-zero) restart.
        restart, stop_seconds = "on-failure", WORKER_STOP_TIMEOUT + 10
    # --network host: the containers reach the metadata service / IMDS directly
    # (eviction notices, managed identity tokens) and the API port is governed by
    # the cloud firewall/NSG alone. --entrypoint makes the command independent of
    # the image's ENTRYPOINT.
    lines = [
        "[Unit]",
        f"Description=spotshift {args.role} container",
        "Wants=network-online.target",
        "After=network-online.target docker.service",
        "Requires=docker.service",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        f"Restart={restart}",
        "RestartSec=5",
        "TimeoutStartSec=0",
        f"TimeoutStopSec={stop_seconds}",
        f"ExecStartPre=-{DOCKER} rm -f {name}",
        *([f"ExecStartPre=-{REGISTRY_LOGIN_SCRIPT}"] if args.registry_server else []),
        f"ExecStartPre=-{DOCKER} pull {image}",
        f"ExecStart={DOCKER} run --rm --name {name} --network host --log-driver journald "
        f"--env-file {ENV_FILE} {run_flags}--entrypoint spotshift {image} {command}",
        f"ExecStop={DOCKER} stop {name}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _registry_login_script(args: CloudInitArgs) -> str:
    """Write /root/.docker/config.json from a short-lived token of the VM's own identity."""
    server = str(args.registry_server)
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", server):
        raise ValueError(f"registry_server must be a registry host name (got {server!r})")
    parse = "python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])'"
    if args.cloud == "gcp":
        fetch = textwrap.dedent(
            f"""\
            user=oauth2accesstoken
            token=$(curl -sSf -H 'Metadata-Flavor: Google' \\
              'http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token' \\
              | {parse} access_token)
            """
        )
    else:
        client_id = _required(args.azure_client_id, "azure_client_id")
        # ACR accepts an Entra ID token only through its /oauth2/exchange endpoint,
        # which returns the registry refresh token Docker presents (as `az acr login` does).
        fetch = textwrap.dedent(
            f"""\
            user=00000000-0000-0000-0000-000000000000
            aad=$(curl -sSf -H 'Metadata: true' \\
              'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/&client_id={client_id}' \\
              | {parse} access_token)
            token=$(curl -sSf -X POST -H 'Content-Type: application/x-www-form-urlencoded' \\
              --data "grant_type=access_token&service={server}&access_token=$aad" \\
              'https://{server}/oauth2/exchange' | {parse} refresh_token)
            """
        )
    return (
        "#!/bin/sh\n"
        "# Refreshes the registry login from the VM's identity before each container start.\n"
        "set -eu\n"
        + fetch
        + "umask 077\n"
        + "mkdir -p /root/.docker\n"
        + "auth=$(printf '%s:%s' \"$user\" \"$token\" | base64 -w0)\n"
        + f"printf '{{\"auths\":{{\"{server}\":{{\"auth\":\"%s\"}}}}}}\\n' \"$auth\" > /root/.docker/config.json\n"
    )


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks, so the document stays readable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)
