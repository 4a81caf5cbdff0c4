"""``AcrImage``: an Azure Container Registry without admin user, AcrPull for the workload, the pushed image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azure_native as azure_native
import pulumi_docker as docker

from infra import images
from infra.azure.roles import ACR_PULL, role_definition_id

#: The user name ACR expects with an exchanged refresh token.
ACR_TOKEN_USER = "00000000-0000-0000-0000-000000000000"


@dataclass
class AcrImageArgs:
    """Inputs of :class:`AcrImage`."""

    resource_group_name: pulumi.Input[str]
    """Resource group."""
    location: pulumi.Input[str]
    """Azure region."""
    registry_name: pulumi.Input[str]
    """Globally unique registry name (5-50 letters and digits)."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in AcrPull role."""
    tenant_id: pulumi.Input[str]
    """Tenant the deployer's token belongs to."""
    build: images.ImageBuildArgs
    """What to build."""
    pull_principal_ids: Sequence[pulumi.Input[str]] = field(default_factory=list)
    """Managed identities (service principals) that may pull."""


class AcrImage(pulumi.ComponentResource):
    """A Basic registry with the admin user disabled; pushes and pulls use Entra ID only."""

    image_ref: pulumi.Output[str]
    registry_server: pulumi.Output[str]
    pull_grants: list[azure_native.authorization.RoleAssignment]

    def __init__(self, name: str, args: AcrImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:azure:AcrImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        registry = azure_native.containerregistry.Registry(
            f"{name}-acr",
            resource_group_name=args.resource_group_name,
            location=args.location,
            registry_name=args.registry_name,
            sku={"name": "Basic"},
            admin_user_enabled=False,
            opts=child,
        )
        pull_role = role_definition_id(args.subscription_id, ACR_PULL)
        self.pull_grants = [
            azure_native.authorization.RoleAssignment(
                f"{name}-acr-pull-{index}",
                principal_id=principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=pull_role,
                scope=registry.id,
                # One assignment per principal, role and scope: replace by deleting first.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
            )
            for index, principal_id in enumerate(args.pull_principal_ids)
        ]
        # The deployer's own Entra ID token, exchanged for a registry token at
        # deploy time only (a preview builds nothing); kept secret in state.
        token = azure_native.authorization.get_client_token_output(opts=pulumi.InvokeOutputOptions(parent=self))
        password = pulumi.Output.all(registry.login_server, args.tenant_id, token.token).apply(
            lambda values: "" if pulumi.runtime.is_dry_run() else images.exchange_acr_refresh_token(*values)
        )
        image = images.build_and_push(
            f"{name}-image",
            args.build,
            image_name=pulumi.Output.concat(registry.login_server, "/", images.IMAGE_REPOSITORY, ":", args.build.tag),
            registry=docker.RegistryArgs(
                server=registry.login_server, username=ACR_TOKEN_USER, password=pulumi.Output.secret(password)
            ),
            parent=self,
        )

        self.image_ref = image.repo_digest
        self.registry_server = registry.login_server
        self.register_outputs({"image_ref": self.image_ref, "registry_server": self.registry_server})
