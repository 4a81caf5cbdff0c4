"""Child-resource naming helpers shared by both clouds' components."""

from __future__ import annotations

import hashlib
import re


def dns_label(text: str, max_length: int, *, salt: str = "") -> str:
    """A lowercase letters/digits/dashes name starting with a letter, at most ``max_length`` long.

    When ``text`` must be shortened, a short hash of the full text (plus ``salt``)
    keeps two long names that share a prefix apart.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if not label or not label[0].isalpha():
        label = f"s-{label}".rstrip("-")
    if len(label) <= max_length and not salt:
        return label
    digest = hashlib.sha256(f"{text}/{salt}".encode()).hexdigest()[:6]
    return f"{label[: max_length - 7].rstrip('-')}-{digest}"


def alnum_name(text: str, unique: str, max_length: int) -> str:
    """A globally unique lowercase alphanumeric name (storage accounts, registries).

    Azure gives these names no dashes and one namespace for the whole cloud, so
    the name is a readable prefix of ``text`` plus a hash of ``unique`` (e.g. the
    subscription, project, stack and component), stable across updates.
    """
    prefix = re.sub(r"[^a-z0-9]", "", text.lower())[:10] or "spotshift"
    digest = hashlib.sha256(unique.encode()).hexdigest()
    return (prefix + digest)[:max_length]
