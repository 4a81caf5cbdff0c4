"""The Pulumi programs of the spotshift project; ``spotshift:cloud`` picks one."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from stacks._config import CLOUDS, ConfigError

#: ``spotshift:cloud`` value → module under ``stacks`` whose ``main()`` is the program.
PROGRAMS = {"gcp": "gcp_source", "azure": "azure_target"}


def program_for(cloud: str | None) -> Callable[[], dict[str, Any]]:
    """The ``main`` of the program for ``cloud``; ConfigError names the key and the allowed values."""
    chosen = (cloud or "").strip().lower()
    if chosen not in PROGRAMS:
        raise ConfigError(f"spotshift:cloud must be one of {', '.join(CLOUDS)} (got {cloud!r})")
    return importlib.import_module(f"stacks.{PROGRAMS[chosen]}").main
