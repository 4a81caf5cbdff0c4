"""Built-in role definitions the workload uses, as subscription-scoped ids."""

from __future__ import annotations

import pulumi

#: Read, write and delete blobs (data plane). Owner/Contributor give no data access.
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
#: Pull images from a container registry.
ACR_PULL = "7f951dda-4ed3-4680-a71d-c19f7ce7b92a"


def role_definition_id(subscription_id: pulumi.Input[str], role: str) -> pulumi.Output[str]:
    """``/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}``."""
    return pulumi.Output.concat(
        "/subscriptions/", subscription_id, "/providers/Microsoft.Authorization/roleDefinitions/", role
    )
