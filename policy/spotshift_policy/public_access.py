"""No public buckets or containers: private by construction on both clouds, and no grant to everyone."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, items, show
from .types import (
    AZURE_ACCOUNT,
    AZURE_CONTAINER,
    GCP_ACL_ENTITY_TYPES,
    GCP_ACL_LIST_TYPES,
    GCP_BUCKET,
    GCP_BUCKET_IAM_BINDING,
    GCP_BUCKET_IAM_MEMBER,
    GCP_BUCKET_IAM_POLICY,
    GCP_FOLDER_IAM_BINDING,
    GCP_FOLDER_IAM_MEMBER,
    GCP_FOLDER_IAM_POLICY,
)

#: GCP principals that mean "anyone" (with or without a Google account).
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
#: Canned ACLs that open a bucket or object to everyone.
PUBLIC_ACLS = frozenset({"publicRead", "publicReadWrite", "authenticatedRead"})


def _public(members: list[Any]) -> list[str]:
    return sorted({member for member in members if isinstance(member, str) and member in PUBLIC_MEMBERS})


def policy_members(policy_data: Any) -> list[Any]:
    """Every member of every binding in an IAM policy document (JSON text)."""
    try:
        document = json.loads(policy_data) if isinstance(policy_data, str) else policy_data
    except ValueError:
        return []
    return [member for binding in items(dig(document, "bindings")) for member in items(dig(binding, "members"))]


def _bucket(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "uniformBucketLevelAccess") is not True:
        yield f"uniformBucketLevelAccess is {show(dig(props, 'uniformBucketLevelAccess'))}, not true (object ACLs stay possible)"
    if dig(props, "publicAccessPrevention") != "enforced":
        yield f"publicAccessPrevention is {show(dig(props, 'publicAccessPrevention'))}, not 'enforced'"


def _iam_member(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    for member in _public(items(dig(props, "member"))):
        yield f"grants {dig(props, 'role')} to {member}"


def _iam_binding(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    for member in _public(items(dig(props, "members"))):
        yield f"grants {dig(props, 'role')} to {member}"


def _iam_policy(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    for member in _public(policy_members(dig(props, "policyData"))):
        yield f"policyData grants a role to {member}"


def _acl_entity(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "entity") in PUBLIC_MEMBERS:
        yield f"ACL entry for {dig(props, 'entity')}"


def _acl_list(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "predefinedAcl") in PUBLIC_ACLS:
        yield f"predefinedAcl is {dig(props, 'predefinedAcl')!r}"
    for entry in items(dig(props, "roleEntities")):
        if isinstance(entry, str) and entry.rpartition(":")[2] in PUBLIC_MEMBERS:
            yield f"roleEntities has {entry!r}"


def _account(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "allowBlobPublicAccess") is not False:
        yield f"allowBlobPublicAccess is {show(dig(props, 'allowBlobPublicAccess'))}, not false"


def _container(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    access = dig(props, "publicAccess")
    if access not in (None, "None"):
        yield f"publicAccess is {access!r}, not 'None'"


NO_PUBLIC_STORAGE = BaselinePolicy(
    "no-public-storage",
    "Buckets and containers are never public: GCS uniform access with public access prevention enforced and no "
    "allUsers/allAuthenticatedUsers grant; Azure accounts without public blob access and private containers.",
    {
        GCP_BUCKET: _bucket,
        GCP_BUCKET_IAM_MEMBER: _iam_member,
        GCP_FOLDER_IAM_MEMBER: _iam_member,
        GCP_BUCKET_IAM_BINDING: _iam_binding,
        GCP_FOLDER_IAM_BINDING: _iam_binding,
        GCP_BUCKET_IAM_POLICY: _iam_policy,
        GCP_FOLDER_IAM_POLICY: _iam_policy,
        **{typ: _acl_entity for typ in GCP_ACL_ENTITY_TYPES},
        **{typ: _acl_list for typ in GCP_ACL_LIST_TYPES},
        AZURE_ACCOUNT: _account,
        AZURE_CONTAINER: _container,
    },
    remediation_steps="Serve objects through the API (signed URLs if needed), never through public access.",
)
