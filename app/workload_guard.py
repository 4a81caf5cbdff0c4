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
from collections.abc import Callable, Iterator, Sequence
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
    """A meta-path finder that refuses some modules before any other finder looks for them.

    Finders are only asked for modules not imported yet: one already in
    ``sys.modules`` is never refused.
    """

    def __init__(self, blocked: Callable[[str], bool], refusal: Callable[[str], ImportError]) -> None:
        self._blocked = blocked
        self._refusal = refusal

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if self._blocked(fullname):
            raise self._refusal(fullname)
        return None


@contextlib.contextmanager
def refused_imports(blocked: Callable[[str], bool], refusal: Callable[[str], ImportError]) -> Iterator[None]:
    """Inside the block, a new import of a module ``blocked(name)`` is true for raises ``refusal(name)``."""
    blocker = _Blocker(blocked, refusal)
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)


def _infra_refusal(fullname: str) -> InfraImportBlocked:
    return InfraImportBlocked(
        f"the workload must not import {fullname!r}: the container image carries only the workload "
        "dependencies (Pulumi is the `infra` extra, for stacks/ and infra/)",
        name=fullname,
    )


def no_infra_imports() -> contextlib.AbstractContextManager[None]:
    """Refuse new imports of Pulumi and the infra code inside the block."""
    return refused_imports(is_blocked, _infra_refusal)
