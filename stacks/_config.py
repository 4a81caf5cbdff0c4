"""Reading and validating stack config: one clear error per bad value, naming the key.

Every ``spotshift:*`` default lives in :data:`DEFAULTS` (and, identically, in
``Pulumi.yaml``); the stack programs read all their config through these
helpers before they create a single resource.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi

from infra.images import ImageBuildArgs

#: Defaults of the spotshift keys (``Pulumi.yaml`` declares the same values).
DEFAULTS: dict[str, Any] = {
    "image": "",
    "buildImage": False,
    "machineType": "e2-standard-2",
    "vmSize": "Standard_D2as_v5",
    "workerCount": 2,
    "apiPort": 8080,
    "allowedCidrs": [],
    "sshSourceCidr": "",
    "sshPublicKey": "",
    "provisioningModel": "SPOT",
    "evictionPolicy": "Deallocate",
    "bucketForceDestroy": False,
    "bucketVersioning": True,
    "bucketSoftDeleteDays": 7,
    "noncurrentVersionDays": 7,
    "workerPublicIp": False,
    "flowLogs": True,
    "blobSoftDeleteDays": 7,
    "encryptionAtHost": True,
    "storageAllowedCidrs": [],
    "storageAccountName": "",
    "protectStorage": True,
    "allowSharedKeyAccess": False,
    "freeze": False,
    "migrationStage": "provision",
    "sourceStack": "",
    "syncRound": 0,
    "grantDeployerDataAccess": True,
    "deployerPrincipalType": "User",
}

#: ``spotshift:cloud`` values and the program each one runs.
CLOUDS = ("gcp", "azure")


class ConfigError(pulumi.RunError):
    """A stack config value is missing or invalid; the message names the key (printed without a traceback)."""


def _raw(key: str) -> str | None:
    namespace, _, name = key.rpartition(":")
    try:
        value = pulumi.Config(namespace).get(name)
    except pulumi.ConfigTypeError as exc:  # pragma: no cover - get() on a plain value does not type-check
        raise ConfigError(f"{key}: {exc}") from None
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _default(key: str) -> Any:
    return DEFAULTS[key.rpartition(":")[2]]


def read_str(key: str, default: str | None = None) -> str | None:
    """A string, or ``default`` when unset or blank."""
    value = _raw(key)
    return default if value is None else value


def require_str(key: str, hint: str) -> str:
    """A string that must be set; ``hint`` says how to set it."""
    value = _raw(key)
    if value is None:
        raise ConfigError(f"{key} is required: {hint}")
    return value


def read_bool(key: str) -> bool:
    """``true`` or ``false`` (any case); unset gives the key's default."""
    value = _raw(key)
    if value is None:
        return bool(_default(key))
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ConfigError(f"{key} must be true or false (got {value!r})")
    return lowered == "true"


def read_int(key: str, minimum: int, maximum: int) -> int:
    """An integer in ``[minimum, maximum]``; unset gives the key's default."""
    value = _raw(key)
    if value is None:
        return int(_default(key))
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise ConfigError(f"{key} must be an integer from {minimum} to {maximum} (got {value!r})")
    return number


def read_choice(key: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (matched case-insensitively, returned as spelled in ``choices``)."""
    value = _raw(key)
    if value is None:
        return str(_default(key))
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ConfigError(f"{key} must be one of {', '.join(choices)} (got {value!r})")


def read_cidr(key: str) -> str | None:
    """One IPv4 CIDR (normalised, e.g. ``203.0.113.7`` → ``203.0.113.7/32``), or None when unset."""
    value = _raw(key)
    return None if value is None else _cidr(key, value)


def read_cidr_list(key: str) -> list[str]:
    """IPv4 CIDRs from a YAML list, a JSON list or a comma-separated string; unset gives []."""
    value = _raw(key)
    if value is None:
        return list(_default(key))
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value.split(",")
    if isinstance(parsed, str):
        parsed = parsed.split(",")
    if not isinstance(parsed, list):
        raise ConfigError(f"{key} must be a list of IPv4 CIDRs (got {value!r})")
    cidrs = [_cidr(key, str(item)) for item in parsed if str(item).strip()]
    return list(dict.fromkeys(cidrs))


def _cidr(key: str, value: str) -> str:
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        raise ConfigError(
            f"{key} must hold IPv4 CIDRs such as 203.0.113.0/24 (got {value.strip()!r})"
        ) from None
    if network.version != 4:
        raise ConfigError(f"{key} must hold IPv4 CIDRs; the VMs have no IPv6 (got {value.strip()!r})")
    if network.prefixlen == 0:
        pulumi.log.warn(f"{key} opens access to the whole Internet (0.0.0.0/0)")
    return str(network)


# --- Keys both stacks read the same way ---------------------------------------


def read_image(repo_root: Path) -> tuple[str | None, bool]:
    """``spotshift:image`` and ``spotshift:buildImage``: one of them must provide the image."""
    build_image = read_bool("spotshift:buildImage")
    image = read_str("spotshift:image")
    if not build_image and image is None:
        raise ConfigError(
            "spotshift:image is required: set it to a pullable image reference, "
            "or set spotshift:buildImage to true to build and push this checkout"
        )
    if build_image and not (repo_root / "Dockerfile").is_file():
        raise ConfigError(f"spotshift:buildImage is true but there is no Dockerfile in {repo_root}")
    return image, build_image


def read_api_port() -> int:
    """``spotshift:apiPort``: any TCP port but SSH's."""
    api_port = read_int("spotshift:apiPort", 1, 65535)
    if api_port == 22:
        raise ConfigError("spotshift:apiPort must not be 22 (that is SSH)")
    return api_port


def image_build(build_image: bool, repo_root: Path) -> ImageBuildArgs | None:
    """What to build when ``spotshift:buildImage`` is true: this checkout's Dockerfile."""
    return ImageBuildArgs(context=str(repo_root), dockerfile=str(repo_root / "Dockerfile")) if build_image else None


def export_all(outputs: Mapping[str, Any]) -> None:
    """``pulumi.export`` every output by name."""
    for name, value in outputs.items():
        pulumi.export(name, value)
