"""Identities reach one bucket or one account: no project-wide storage roles on GCP, resource-scoped roles on Azure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ._base import BaselinePolicy, dig, items
from .types import (
    AZURE_ROLE_ASSIGNMENT,
    GCP_BUCKET_IAM_BINDING,
    GCP_BUCKET_IAM_MEMBER,
    GCP_WIDE_IAM_BINDING,
    GCP_WIDE_IAM_MEMBER,
    GCP_WIDE_IAM_POLICY,
)

#: Basic roles carry storage.* permissions on every bucket below the grant.
GCP_BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})

#: Bucket roles that also administer the bucket itself (its IAM, settings, deletion), not just its objects.
GCP_BUCKET_ADMIN_ROLES = GCP_BASIC_ROLES | {"roles/storage.admin"}

#: Built-in Azure roles that reach blob data or account keys (role definition GUIDs).
AZURE_STORAGE_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}

#: A scope that names one resource (or a child of one), not a management group, subscription or resource group.
_RESOURCE_SCOPE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+/[^/]+", re.IGNORECASE)
_STORAGE_SCOPE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/[^/]+/[^/]+", re.IGNORECASE)


def _broad_gcp_role(role: Any) -> bool:
    return isinstance(role, str) and (role.startswith("roles/storage.") or role in GCP_BASIC_ROLES)


def _gcp_member(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if _broad_gcp_role(dig(props, "role")):
        yield f"grants {dig(props, 'role')} to {dig(props, 'member')} on every bucket; grant it on the bucket instead"


def _gcp_binding(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if _broad_gcp_role(dig(props, "role")):
        members = ", ".join(map(str, items(dig(props, "members"))))
        yield f"grants {dig(props, 'role')} to {members} on every bucket; grant it on the bucket instead"


def _gcp_policy(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    policy_data = dig(props, "policyData")
    try:
        document = json.loads(policy_data) if isinstance(policy_data, str) else policy_data
    except ValueError:
        yield "policyData is not a JSON IAM policy"
        return
    for binding in items(dig(document, "bindings")):
        if _broad_gcp_role(dig(binding, "role")):
            yield f"policyData grants {dig(binding, 'role')} on every bucket; grant it on the bucket instead"


def _gcp_bucket_grant(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    if dig(props, "role") in GCP_BUCKET_ADMIN_ROLES:
        yield f"grants {dig(props, 'role')} on bucket {dig(props, 'bucket')}: that administers the bucket, use an object role"


def _role_assignment(props: Mapping[str, Any], config: Mapping[str, Any]) -> Iterator[str]:
    scope = dig(props, "scope")
    role_id = str(dig(props, "roleDefinitionId") or "").rstrip("/").rpartition("/")[2].lower()
    if not isinstance(scope, str) or not _RESOURCE_SCOPE.match(scope):
        yield f"scope {scope!r} is a subscription, resource group or management group, not one resource"
    elif role_id in AZURE_STORAGE_ROLES and not _STORAGE_SCOPE.match(scope):
        yield f"{AZURE_STORAGE_ROLES[role_id]} is scoped to {scope!r}, not to a storage account"


IDENTITIES_SCOPED = BaselinePolicy(
    "identities-scoped-to-one-store",
    "Identities get storage access on one bucket or one storage account only: no project-, folder- or "
    "organization-level storage (or basic) roles and no bucket admin role on GCP; Azure role assignments scoped to the resource they serve.",
    {
        **{typ: _gcp_member for typ in GCP_WIDE_IAM_MEMBER},
        **{typ: _gcp_binding for typ in GCP_WIDE_IAM_BINDING},
        **{typ: _gcp_policy for typ in GCP_WIDE_IAM_POLICY},
        GCP_BUCKET_IAM_MEMBER: _gcp_bucket_grant,
        GCP_BUCKET_IAM_BINDING: _gcp_bucket_grant,
        AZURE_ROLE_ASSIGNMENT: _role_assignment,
    },
    remediation_steps="Use gcp.storage.BucketIAMMember and role assignments whose scope is the storage account's id.",
)
