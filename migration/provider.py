"""``migration.provider.MigrationProvider``: the dynamic provider ``ObjectMigration`` stores in state.

Stability promise: the Python SDK pickles this class *by reference* (module
path + class name) into every stack's state, and ``pulumi refresh`` /
``pulumi destroy`` unpickle it from there. This module's path, the class name
and its method names are therefore part of spotshift's public interface: they
are never renamed or moved. The class holds no state and delegates every call
to ``migration.resource`` (imported inside the call), so the logic can change
freely behind it. ``migration.resource.MigrationProvider`` (the name 0.1.0
pickled) stays an alias of this class for the same reason.
"""

from __future__ import annotations

from typing import Any

import pulumi.dynamic


class MigrationProvider(pulumi.dynamic.ResourceProvider):
    """Runs a copy round on create/update; never deletes data; reads without touching a cloud."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        """First round: copy everything, verify, digest."""
        from migration import resource

        return resource.provider_create(props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        """Changes when any stored input changed; never a replacement."""
        from migration import resource

        return resource.provider_diff(olds, news)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        """Another round when a round input changed; otherwise only the stored inputs change."""
        from migration import resource

        return resource.provider_update(olds, news)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        """The last known state, as recorded; touches neither cloud."""
        from migration import resource

        return resource.provider_read(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Forget the resource; migrated objects stay where they are."""
