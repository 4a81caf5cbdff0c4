"""Keep the Pulumi toolchain out of the workload: the image does not carry it, so an import of it is a bug.

``spotshift api`` and ``spotshift worker`` run inside ``no_infra_imports()``:
any new import of Pulumi, its providers or the project's Pulumi code fails at
once with ``InfraImportBlocked``, in a dev venv that has the ``infra`` extra
as much as in the image that has not, so tests catch it before a Spot VM does.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

#: Top-level packages of the ``infra`` extra and the project's Pulumi code.
BLOCKED_PACKAGES = frozenset({"pulumi", "pulumi_gcp", "pulumi_azure_native", "pulumi_docker", "infra", "stacks"})
#: Single modules that import Pulumi (the ObjectMigration dynamic provider).
BLOCKED_MODULES = frozenset({"migration.resource"})


class InfraImportBlocked(ImportError):
    """The workload tried to import Pulumi or the infra code, which its image does not carry."""


def is_blocked(name: str) -> bool:
    """True for a module the workload must never import."""
    return name.partition(".")[0] in BLOCKED_PACKAGES or name in BLOCKED_MODULES


class _Blocker(importlib.abc.MetaPathFinder):
    """A meta-path finder that refuses the blocked modules before any other finder looks for them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if is_blocked(fullname):
            raise InfraImportBlocked(
                f"the workload must not import {fullname!r}: the container image carries only the workload "
                "dependencies (Pulumi is the `infra` extra, for stacks/ and infra/)",
                name=fullname,
            )
        return None


@contextlib.contextmanager
def no_infra_imports() -> Iterator[None]:
    """Refuse new imports of Pulumi and the infra code inside the block."""
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
