"""Pulumi entry point: run the program that ``spotshift:cloud`` names (``gcp`` or ``azure``).

The choice follows config, not the stack's name, so stacks may be named freely.
"""

import sys
from pathlib import Path

import pulumi

# Pulumi runs this directory as a script; the repository root makes `stacks`
# importable as a package (`infra` is installed into the venv).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from stacks import program_for  # noqa: E402

program_for(pulumi.Config("spotshift").get("cloud"))()
