"""``ArtifactRegistryImage``: an Artifact Registry repository, pull access, and the pushed image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from infra._naming import dns_label
from infra.images import IMAGE_REPOSITORY, ImageBuildArgs, build_and_push

READER_ROLE = "roles/artifactregistry.reader"


@dataclass
class ArtifactRegistryImageArgs:
    """Inputs of :class:`ArtifactRegistryImage`."""

    project: pulumi.Input[str]
    """GCP project id."""
    location: str
    """Region of the repository (the workload's region)."""
    build: ImageBuildArgs
    """What to build."""
    readers: Sequence[pulumi.Input[str]] = field(default_factory=list)
    """IAM members that may pull (the workload's service account)."""


class ArtifactRegistryImage(pulumi.ComponentResource):
    """A Docker repository in Artifact Registry holding the workload image built from this checkout."""

    image_ref: pulumi.Output[str]
    registry_server: str
    reader_grants: list[gcp.artifactregistry.RepositoryIamMember]

    def __init__(
        self, name: str, args: ArtifactRegistryImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spotshift:gcp:ArtifactRegistryImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        repository = gcp.artifactregistry.Repository(
            f"{name}-repo",
            project=args.project,
            location=args.location,
            # Repository ids are unique per project and location: the stack name keeps two
            # stacks of one GCP project (each with buildImage) apart.
            repository_id=dns_label(f"{name}-{pulumi.get_stack()}", 63),
            format="DOCKER",
            opts=child,
        )
        self.reader_grants = [
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-reader-{index}",
                project=args.project,
                location=args.location,
                repository=repository.name,
                role=READER_ROLE,
                member=member,
                opts=child,
            )
            for index, member in enumerate(args.readers)
        ]
        self.registry_server = f"{args.location}-docker.pkg.dev"
        # The provider's own OAuth token pushes the image; it stays a secret in state.
        client = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        image = build_and_push(
            f"{name}-image",
            args.build,
            image_name=pulumi.Output.concat(
                self.registry_server, "/", args.project, "/", repository.repository_id, "/",
                IMAGE_REPOSITORY, ":", args.build.tag,
            ),
            registry=docker.RegistryArgs(
                server=self.registry_server,
                username="oauth2accesstoken",
                password=pulumi.Output.secret(client.access_token),
            ),
            parent=self,
        )

        self.image_ref = image.repo_digest
        self.register_outputs({"image_ref": self.image_ref, "registry_server": self.registry_server})
