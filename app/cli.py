"""The ``spotshift`` command: ``api``, ``worker``, ``backfill-index``, ``demo``, ``rehearse`` and the migration commands.

Heavy imports (FastAPI, uvicorn, Pillow, cloud SDKs) happen inside the
commands so ``spotshift --help`` and the migration commands start fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

cli = typer.Typer(
    name="spotshift",
    help="Run the spotshift workload and migrate its data between clouds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit code for a missing or invalid setting.
EXIT_CONFIG = 2

T = TypeVar("T")


def _configured(start: Callable[[Any], T]) -> T:
    """Load settings and call ``start(settings)``; a configuration error exits 2 with one line."""
    from app.settings import ConfigError, load_settings
    from app.storage.base import StorageConfigError

    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.LOG_LEVEL,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # At DEBUG these libraries log full request URLs, SAS signatures included:
        # they stay at WARNING whatever LOG_LEVEL says.
        for noisy in ("urllib3", "azure", "google", "requests"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.LOG_LEVEL)))
        return start(settings)
    except (ConfigError, StorageConfigError) as exc:
        typer.echo(f"spotshift: configuration error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8080,
) -> None:
    """Serve the HTTP API: upload page, jobs, results, /healthz, /readyz, /metrics."""
    from app.workload_guard import no_infra_imports

    with no_infra_imports():
        from app.api.server import serve

        _configured(lambda settings: serve(host, port, settings))


@cli.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Exit once no job is queued or in progress.")] = False,
) -> None:
    """Process queued jobs until SIGTERM/SIGINT or an eviction notice (or, with --burst, until the queue is empty)."""
    import signal

    # A stop can arrive while the SDKs and the job child start (seconds on a busy VM):
    # note it now and drain once the worker exists, instead of dying with the default action.
    early_signals: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_signals.append(signal.Signals(signum).name))

    from app.workload_guard import no_infra_imports

    with no_infra_imports():
        from app.worker import run_worker

        code = _configured(lambda settings: run_worker(settings, burst=burst, early_signals=early_signals))
    raise typer.Exit(code)


@cli.command("backfill-index")
def backfill_index() -> None:
    """Give jobs from before the newest-first index an index/ entry (one-time; safe to repeat)."""
    from app.queue import Queue

    def run(settings: Any) -> tuple[int, int]:
        with settings.build_store() as store:
            return Queue.from_settings(store, settings).backfill_index()

    added, present = _configured(run)
    typer.echo(f"index backfill: {added} entries added, {present} already there")


@cli.command()
def demo(
    store_dir: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Local store directory (default: a new temporary directory)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the jobs.")] = 60.0,
) -> None:
    """Run the workload locally: API + worker on a local store, a few generated images, their results."""
    from app.demo import run_demo

    raise typer.Exit(run_demo(store_dir, timeout=timeout))


@cli.command()
def rehearse(
    jobs: Annotated[int, typer.Option("--jobs", "-n", min=2, help="Images submitted on the GCP side.")] = 50,
    workers: Annotated[int, typer.Option(min=1, max=8, help="Worker processes per cloud.")] = 2,
    queued: Annotated[
        int | None, typer.Option(min=1, help="Jobs left queued on GCP for Azure to finish (default: jobs/5).")
    ] = None,
    inject: Annotated[
        str, typer.Option(help="Fault to inject: none, or tamper (silently alter one migrated object before cutover).")
    ] = "none",
    report_dir: Annotated[
        Path, typer.Option(file_okay=False, help="Where rehearsal-report.json/.html and the service logs go.")
    ] = Path("."),
    gcs_port: Annotated[int | None, typer.Option(min=1, max=65535, help="fake-gcs-server port (default: free).")] = None,
    azurite_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Azurite port (default: free).")] = None,
) -> None:
    """Rehearse the whole GCP → Azure migration on local emulators; exit 0 only if every check passed."""
    from migration.rehearsal import rehearse as run_rehearsal

    raise typer.Exit(run_rehearsal(jobs=jobs, workers=workers, queued=queued, inject=inject, report_dir=report_dir,
                                   gcs_port=gcs_port, azurite_port=azurite_port))


def main() -> None:
    """Console-script entry point."""
    from migration.cli import register

    register(cli)
    cli()
