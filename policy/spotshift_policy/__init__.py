"""spotshift's security baseline as CrossGuard policies (wire names, both clouds)."""

from pulumi_policy import ResourceValidationPolicy

from ._base import BaselinePolicy
from .compute import ENCRYPTION_AT_HOST, NO_VM_EXTENSION_OPERATIONS
from .data_protection import DATA_PROTECTION_CONFIGURED, DATA_PROTECTION_ON
from .identity import IDENTITIES_SCOPED
from .ingress import NO_WORLD_OPEN_INGRESS
from .login import NO_PASSWORD_LOGIN
from .protection import DATA_STORES_PROTECTED
from .network import SUBNET_FLOW_LOGS, WORKERS_WITHOUT_PUBLIC_IP
from .public_access import NO_PUBLIC_STORAGE
from .spot import SPOT_EVERYWHERE
from .storage_account import SHARED_KEYS_OFF, STORAGE_DENY_BY_DEFAULT, TLS_HTTPS_ONLY
from .user_data import NO_SECRETS_IN_USER_DATA

#: Every resource policy of the pack, in the order the README lists them.
RESOURCE_POLICIES: tuple[ResourceValidationPolicy, ...] = (
    SPOT_EVERYWHERE,
    NO_PUBLIC_STORAGE,
    TLS_HTTPS_ONLY,
    SHARED_KEYS_OFF,
    NO_PASSWORD_LOGIN,
    NO_WORLD_OPEN_INGRESS,
    IDENTITIES_SCOPED,
    DATA_PROTECTION_ON,
    ENCRYPTION_AT_HOST,
    NO_SECRETS_IN_USER_DATA,
    STORAGE_DENY_BY_DEFAULT,
    DATA_STORES_PROTECTED,
    NO_VM_EXTENSION_OPERATIONS,
    SUBNET_FLOW_LOGS,
    WORKERS_WITHOUT_PUBLIC_IP,
)
#: Resource policies plus the stack-level check that every storage account has blob service properties.
POLICIES = (*RESOURCE_POLICIES, DATA_PROTECTION_CONFIGURED)

__all__ = ["POLICIES", "RESOURCE_POLICIES", "BaselinePolicy", "DATA_PROTECTION_CONFIGURED"]
