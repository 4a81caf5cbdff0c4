"""The ``spotshift`` command: ``api``, ``worker`` and the migration commands."""

from __future__ import annotations

import typer

cli = typer.Typer(
    name="spotshift",
    help="Run the spotshift workload and migrate its data between clouds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console-script entry point."""
    from migration.cli import register

    register(cli)
    cli()
