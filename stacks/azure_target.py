"""The azure-target stack: the workload on Azure Spot VMs with its state in a private storage account.

``spotshift:migrationStage`` stages the move: ``provision`` builds the Azure
side only; ``sync`` and ``cutover`` add the object migration from the
gcp-source stack's bucket (see "Migration stages" below).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from infra.azure import EVICTION_POLICIES, AzureSpotWorkload, AzureSpotWorkloadArgs
from migration.resource import ObjectMigration, ObjectMigrationArgs
from stacks._config import (
    ConfigError,
    export_all,
    image_build,
    read_api_port,
    read_image,
    read_bool,
    read_choice,
    read_cidr,
    read_cidr_list,
    read_int,
    read_str,
    require_str,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every value ``spotshift:migrationStage`` may take, in rollout order.
MIGRATION_STAGES = ("provision", "sync", "cutover")
#: Kinds of principal that can run `pulumi up` (and receive blob data access).
PRINCIPAL_TYPES = ("User", "ServicePrincipal", "Group")

_LOCATION = re.compile(r"^[a-z]+[a-z0-9]*$")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
#: Azure's storage firewall rejects IP rules in these ranges (traffic from them never reaches it).
_RFC1918 = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_SSH_KEY = re.compile(r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$")


@dataclass(frozen=True)
class AzureTargetConfig:
    """Validated config of the azure-target stack."""

    location: str
    image: str | None
    build_image: bool
    vm_size: str
    worker_count: int
    api_port: int
    allowed_cidrs: list[str]
    ssh_source_cidr: str | None
    ssh_public_key: str
    eviction_policy: str
    allow_shared_key_access: bool
    grant_deployer_data_access: bool
    deployer_principal_type: str
    migration_stage: str
    source_stack: str | None
    sync_round: int = 0
    encryption_at_host: bool = True
    storage_account_name: str | None = None
    storage_allowed_cidrs: list[str] = field(default_factory=list)
    blob_soft_delete_days: int = 7
    noncurrent_version_days: int = 7
    protect_storage: bool = True


def load_config() -> AzureTargetConfig:
    """Read and validate every key this stack uses; ConfigError names the first bad key."""
    location = read_str("azure-native:location", "westeurope").lower().replace(" ", "")
    if not _LOCATION.match(location):
        raise ConfigError(f"azure-native:location must be an Azure region such as westeurope (got {location!r})")

    image, build_image = read_image(REPO_ROOT)
    api_port = read_api_port()

    ssh_public_key = require_str(
        "spotshift:sshPublicKey",
        "password login is disabled on the VMs; run `pulumi config set spotshift:sshPublicKey \"$(cat ~/.ssh/id_ed25519.pub)\"`",
    )
    if not _SSH_KEY.match(ssh_public_key):
        raise ConfigError(
            "spotshift:sshPublicKey must be one OpenSSH public key line (ssh-ed25519/ssh-rsa/ecdsa-...), "
            "never a private key"
        )

    stage = read_choice("spotshift:migrationStage", MIGRATION_STAGES)
    source_stack = read_str("spotshift:sourceStack")
    if source_stack is not None and len([part for part in source_stack.split("/") if part]) != 3:
        raise ConfigError(
            f"spotshift:sourceStack must be a fully qualified stack name such as "
            f"my-org/spotshift/gcp-source (got {source_stack!r})"
        )
    if stage != "provision" and source_stack is None:
        raise ConfigError(
            f"spotshift:sourceStack is required when spotshift:migrationStage is {stage}: the migration reads "
            "the bucket from that stack; run `pulumi config set spotshift:sourceStack my-org/spotshift/gcp-source`"
        )
    sync_round = read_int("spotshift:syncRound", 0, 1_000_000)

    account_name = read_str("spotshift:storageAccountName")
    if account_name is not None and not _ACCOUNT_NAME.match(account_name):
        raise ConfigError(
            f"spotshift:storageAccountName must be 3 to 24 lowercase letters and digits (got {account_name!r})"
        )
    storage_cidrs = read_cidr_list("spotshift:storageAllowedCidrs")
    for cidr in storage_cidrs:
        if any(ipaddress.ip_network(cidr).subnet_of(private) for private in _RFC1918):
            raise ConfigError(
                f"spotshift:storageAllowedCidrs takes public IPv4 addresses only; the account's firewall refuses "
                f"private ranges (got {cidr}): use the public address your traffic leaves from"
            )
    if stage in ("sync", "cutover") and not storage_cidrs:
        raise ConfigError(
            f"spotshift:storageAllowedCidrs is required when spotshift:migrationStage is {stage}: the storage "
            "account denies every network but the workload's subnet, and the migration writes from the machine "
            "running `pulumi up`; run `pulumi config set --path 'spotshift:storageAllowedCidrs[0]' <your public IP>`"
        )

    return AzureTargetConfig(
        location=location,
        image=image,
        build_image=build_image,
        vm_size=read_str("spotshift:vmSize", "Standard_D2as_v5"),
        # A scale set in one placement group (the default) holds at most 100 VMs.
        worker_count=read_int("spotshift:workerCount", 0, 100),
        api_port=api_port,
        allowed_cidrs=read_cidr_list("spotshift:allowedCidrs"),
        ssh_source_cidr=read_cidr("spotshift:sshSourceCidr"),
        ssh_public_key=ssh_public_key,
        eviction_policy=read_choice("spotshift:evictionPolicy", EVICTION_POLICIES),
        allow_shared_key_access=read_bool("spotshift:allowSharedKeyAccess"),
        grant_deployer_data_access=read_bool("spotshift:grantDeployerDataAccess"),
        deployer_principal_type=read_choice("spotshift:deployerPrincipalType", PRINCIPAL_TYPES),
        migration_stage=stage,
        source_stack=source_stack,
        sync_round=sync_round,
        encryption_at_host=read_bool("spotshift:encryptionAtHost"),
        storage_account_name=account_name,
        storage_allowed_cidrs=storage_cidrs,
        blob_soft_delete_days=read_int("spotshift:blobSoftDeleteDays", 1, 365),
        noncurrent_version_days=read_int("spotshift:noncurrentVersionDays", 1, 3650),
        protect_storage=read_bool("spotshift:protectStorage"),
    )


# --- Migration stages --------------------------------------------------------


@dataclass
class MigrationTarget:
    """What the sync/cutover stages need from the provisioned Azure side."""

    storage_account_url: pulumi.Output[str]
    """``https://<account>.blob.core.windows.net``: the copy's destination endpoint."""
    container_name: pulumi.Output[str]
    """Destination container."""
    storage_account_id: pulumi.Output[str]
    """ARM id of the account (scope of the role assignments)."""
    storage_account_name: pulumi.Output[str]
    """Account name."""
    resource_group_name: pulumi.Output[str]
    """Resource group of the account."""
    api_url: pulumi.Output[str] | None = None
    """The Azure API's URL, exported at cutover for the DNS/client switch."""
    data_access_grants: list[pulumi.Resource] = field(default_factory=list)
    """Blob-data role assignments (workload identity, deployer): ``depends_on`` them before writing blobs."""


def add_migration_stage(config: AzureTargetConfig, target: MigrationTarget) -> dict[str, Any]:
    """Resources and exports of the configured migration stage; ``provision`` adds none.

    ``sync`` and ``cutover`` add the ObjectMigration resource: a StackReference
    to ``config.source_stack`` gives the source bucket (and, for cutover,
    ``frozen``); the resource writes to ``target.storage_account_url`` /
    ``target.container_name`` with the deployer's Entra ID identity, after
    ``target.data_access_grants`` exist.
    """
    if config.migration_stage == "provision":
        return {}
    assert config.source_stack is not None  # load_config requires it for these stages
    cutover = config.migration_stage == "cutover"
    source = pulumi.StackReference(config.source_stack)
    bucket = source.require_output("bucket_name")
    if cutover:
        # The gate sits on the migration's own input, so nothing is copied (and preview fails)
        # unless the source stack has frozen writes.
        bucket = pulumi.Output.all(bucket, source.get_output("frozen")).apply(
            lambda values: _frozen_or_refuse(config.source_stack, values[0], values[1])
        )
    migration = ObjectMigration(
        "spotshift-migration",
        ObjectMigrationArgs(
            source_bucket=bucket,
            gcs_project=source.get_output("project"),
            target_account_url=target.storage_account_url,
            target_container=target.container_name,
            sync_round=config.sync_round,
            strict=cutover,
            # Cutover: after the strict round, refuse if any source object is newer than the marker.
            freeze_marker=source.get_output("freeze_marker").apply(
                lambda key: _freeze_marker_or_refuse(config.source_stack, key)
            ) if cutover else None,
        ),
        pulumi.ResourceOptions(depends_on=list(target.data_access_grants)),
    )
    outputs: dict[str, Any] = {
        "source_bucket": bucket,
        "sync_round": config.sync_round,
        "migration_objects_copied": migration.objects_copied,
        "migration_bytes_copied": migration.bytes_copied,
        "migration_objects_skipped": migration.objects_skipped,
        "migration_objects_failed": migration.objects_failed,
        "migration_verified": migration.verified,
        "manifest_digest": migration.manifest_digest,
    }
    if cutover:
        # A strict round that did not verify fails the update, so a finished cutover is ready.
        outputs["cutover_ready"] = migration.verified.apply(lambda verified: verified is True)
        outputs["cutover_api_url"] = target.api_url
    return outputs


def _frozen_or_refuse(source_stack: str, bucket: str, frozen: Any) -> str:
    """The bucket name, once the source stack reports ``frozen: true``; otherwise a clear refusal."""
    if frozen is not True and str(frozen).lower() != "true":
        raise ConfigError(
            f"spotshift:migrationStage is cutover but the source stack {source_stack} is not frozen "
            f"(it exports frozen={frozen!r}): run `pulumi config set spotshift:freeze true -s gcp-source` and "
            "`pulumi up -s gcp-source` first, so no write lands on GCP after the final sync"
        )
    return bucket


def _freeze_marker_or_refuse(source_stack: str, key: Any) -> str:
    """The source's freeze-marker key; a source stack that exports none cannot prove its freeze."""
    if not key:
        raise ConfigError(
            f"spotshift:migrationStage is cutover but the source stack {source_stack} exports no freeze_marker: "
            "run `pulumi up -s gcp-source` with this version (spotshift:freeze true) so it writes the marker "
            "after its workers are gone"
        )
    return str(key)


# --- Program -----------------------------------------------------------------


def main() -> dict[str, Any]:
    """Build the azure-target stack and export its outputs (also returned, for tests)."""
    config = load_config()

    workload = AzureSpotWorkload(
        "spotshift",
        AzureSpotWorkloadArgs(
            location=config.location,
            ssh_public_key=config.ssh_public_key,
            image=config.image,
            build=image_build(config.build_image, REPO_ROOT),
            vm_size=config.vm_size,
            worker_count=config.worker_count,
            api_port=config.api_port,
            allowed_cidrs=config.allowed_cidrs,
            ssh_source_cidr=config.ssh_source_cidr,
            eviction_policy=config.eviction_policy,
            allow_shared_key_access=config.allow_shared_key_access,
            grant_deployer_data_access=config.grant_deployer_data_access,
            deployer_principal_type=config.deployer_principal_type,
            encryption_at_host=config.encryption_at_host,
            storage_account_name=config.storage_account_name,
            storage_allowed_ips=config.storage_allowed_cidrs,
            blob_soft_delete_days=config.blob_soft_delete_days,
            protect_storage=config.protect_storage,
            noncurrent_version_days=config.noncurrent_version_days,
        ),
    )
    target = MigrationTarget(
        storage_account_url=workload.storage_account_url,
        container_name=workload.container_name,
        storage_account_id=workload.storage_account_id,
        storage_account_name=workload.storage_account_name,
        resource_group_name=workload.resource_group_name,
        api_url=workload.api_url,
        data_access_grants=list(workload.data_access_grants),
    )

    outputs: dict[str, Any] = {
        "api_url": workload.api_url,
        "api_ip": workload.api_ip,
        "resource_group_name": workload.resource_group_name,
        "storage_account_name": workload.storage_account_name,
        "storage_account_url": workload.storage_account_url,
        "container_name": workload.container_name,
        "identity_client_id": workload.identity_client_id,
        "migration_stage": config.migration_stage,
    }
    outputs.update(add_migration_stage(config, target))
    export_all(outputs)
    return outputs
