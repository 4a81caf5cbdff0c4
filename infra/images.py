"""The workload's container image: a given reference, or a build pushed to the cloud's private registry.

By default (``spotshift:buildImage: false``) the VMs run ``spotshift:image`` as
given. With a build, the registry components (``infra.gcp.registry``,
``infra.azure.registry``) create a private registry, grant the workload's
identity pull access, and push the image built here; the VMs then run the
pushed digest, so every new build rolls out as a cloud-init change.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

#: Repository name inside the registry.
IMAGE_REPOSITORY = "spotshift"


@dataclass
class ImageBuildArgs:
    """Where the image is built from."""

    context: str
    """Build context (the repository root)."""
    dockerfile: str
    """Path of the Dockerfile."""
    platform: str = "linux/amd64"
    """Target platform; both clouds' VMs are x86-64."""
    tag: str = "latest"
    """Tag pushed next to the digest (the VMs use the digest)."""


def build_and_push(
    name: str,
    build: ImageBuildArgs,
    image_name: pulumi.Input[str],
    registry: docker.RegistryArgs,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
) -> docker.Image:
    """Build ``build`` and push it as ``image_name``; read ``repo_digest`` for the pushed reference."""
    return docker.Image(
        name,
        build=docker.DockerBuildArgs(context=build.context, dockerfile=build.dockerfile, platform=build.platform),
        image_name=image_name,
        registry=registry,
        # Building on preview would need Docker and registry access just to look.
        build_on_preview=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on or []),
    )


def exchange_acr_refresh_token(
    login_server: str,
    tenant_id: str,
    access_token: str,
    *,
    urlopen: Callable[..., Any] = urllib.request.urlopen,
) -> str:
    """Trade an Entra ID access token for an ACR refresh token (what ``az acr login`` does).

    ACR with the admin user disabled accepts Entra ID identities only through
    this exchange; the refresh token is the Docker password for the user
    ``00000000-0000-0000-0000-000000000000``.
    """
    body = urllib.parse.urlencode(
        {"grant_type": "access_token", "service": login_server, "tenant": tenant_id, "access_token": access_token}
    ).encode()
    request = urllib.request.Request(
        f"https://{login_server}/oauth2/exchange",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urlopen(request, timeout=30) as response:
        return json.load(response)["refresh_token"]
