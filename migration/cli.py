"""``spotshift migrate`` and ``spotshift verify``: the copy engine on the command line.

Locations are ``gs://BUCKET[/PREFIX]``, ``az://CONTAINER[/PREFIX]`` (account
from ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_URL``) or
``file://PATH``, in any direction.

Exit codes: 0 when every object is verified (or a dry run was planned),
1 when some object failed or does not match, 2 for usage and configuration
errors (bad location, missing bucket or container, no credentials,
``--max-delete`` exceeded), printed as one line on stderr.

Imports stay inside the commands: the no-op rerun is dominated by process
start-up, and each cloud SDK is only imported when a location needs it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")

_Include = Annotated[
    list[str] | None,
    typer.Option("--include", "-i", metavar="GLOB",
                 help="Only keys (relative to the prefix) matching this glob; repeatable."),
]
_Exclude = Annotated[
    list[str] | None,
    typer.Option("--exclude", "-x", metavar="GLOB", help="Skip keys matching this glob; repeatable."),
]
# No square brackets: Typer renders help as rich markup, where "[/PREFIX]" is a closing tag.
_LOCATION_HELP = "gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (prefix optional) or file://PATH"
_Json = Annotated[bool, typer.Option("--json", help="Print the report as JSON (no progress bar).")]
_NoProgress = Annotated[bool, typer.Option("--no-progress", help="No live progress bar.")]
_Shard = Annotated[
    str | None,
    typer.Option("--shard", metavar="I/N",
                 help="Only slice I of N (0-based) of the keys, by a stable hash: N runners with "
                      "0/N ... N-1/N together cover every key exactly once."),
]
#: With --dry-run --json, at most this many planned copies and deletions are listed (the counts are complete).
JSON_PLAN_LIMIT = 1000
#: glibc malloc arenas for the engine's threads (``_cap_malloc_arenas``); ``mallopt``'s M_ARENA_MAX.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8


def _workers_option(help: str = "Parallel transfers.") -> Any:
    return typer.Option("--workers", "-w", min=1, max=256, help=help)


def _fail(message: str, code: int) -> typer.Exit:
    sys.stdout.flush()  # a dry run's plan lines so far come before the error, also when both go to one file
    typer.echo(f"spotshift: {message}", err=True)
    return typer.Exit(code)


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; configuration and usage errors become one line on stderr and exit 2."""
    from app.storage.base import StorageConfigError, StorageError
    from migration.rules import UsageError

    try:
        return action()
    except (StorageConfigError, UsageError) as err:
        raise _fail(f"error: {_one_line(err)}", EXIT_USAGE) from None
    except StorageError as err:
        # Listing kept failing after retries: nothing is known to be verified.
        raise _fail(f"error: {_one_line(err)}", EXIT_MISMATCH) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; run the same command again to resume (copied objects are kept)",
                    EXIT_INTERRUPTED) from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _open_pair(source_url: str, target_url: str, workers: int) -> tuple[Any, str, Any, str, Any]:
    """Both stores and prefixes, plus the target's listing already under way; refuses overlapping locations."""
    from app.storage.factory import open_location, parse_location
    # Only the planner's listing and the rules before the target's listing starts; the rest of
    # the engine is imported while it runs.
    from migration.merge import EarlyListing
    from migration.rules import UsageError, normalize_prefix

    src, dst = parse_location(source_url), parse_location(target_url)
    if _overlap(src, dst):
        raise UsageError(f"{source_url} and {target_url} overlap; copy between different buckets or "
                         "non-overlapping prefixes")
    # Importing the SDKs allocates hundreds of thousands of long-lived objects: no
    # cyclic GC pass runs over them while they load, and none later (gc.freeze):
    # 0.2-0.4 s of a 2,000-object no-op rerun. The GC runs as usual for the rest.
    gc.disable()
    try:
        with _without_grpc():
            # The target opens first and starts listing at once: its round trips then
            # overlap the source SDK's import (a no-op rerun is mostly start-up and listing).
            target, target_prefix = open_location(target_url)
            early = EarlyListing(target, target_prefix, workers)
            try:
                source, source_prefix = open_location(source_url)
            except BaseException:
                target.close()
                raise
    finally:
        gc.freeze()
        gc.enable()
    return source, source_prefix, target, target_prefix, early


def _without_grpc() -> contextlib.AbstractContextManager[None]:
    """Import the cloud SDKs without gRPC, unless something in this process already imported it.

    The engine speaks REST/JSON only. ``google-api-core`` imports ``grpc``
    when it is installed and works without it (it is the ``grpc`` extra);
    the workload image does not carry it, but a venv with the ``infra``
    extra does (Pulumi needs it), where it cost every run 8-10 MiB of peak
    RSS and about 40 ms of start-up. Refused only while the stores open, and
    only when not imported yet: the Pulumi provider, which has it, is
    untouched, and a later import in the same process (a test's) works.
    """
    if "grpc" in sys.modules:
        return contextlib.nullcontext()
    from app.workload_guard import refused_imports

    return refused_imports(lambda name: name.partition(".")[0] == "grpc",
                           lambda name: ModuleNotFoundError(f"{name} is not used by the engine", name=name))


def _cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` before the engine's threads start; True if it was set.

    glibc gives each new thread an arena of its own up to 8 per core, each
    keeping its own freed memory: the listing, fan-out and transfer threads
    of a 20,000-object GCS -> Azure no-op took 3-5 MiB more peak RSS than
    with 2. A ``MALLOC_ARENA_MAX`` in the environment is the user's choice and
    is left alone; elsewhere than glibc this does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _overlap(src: Any, dst: Any) -> bool:
    """True when one location lies inside the other (for directories, after resolving links)."""
    from migration.rules import normalize_prefix

    if src.scheme != dst.scheme:
        return False
    if src.scheme == "file":
        a, b = os.path.realpath(src.bucket), os.path.realpath(dst.bucket)
        return os.path.commonpath([a, b]) in (a, b)
    if src.bucket != dst.bucket:
        return False
    a, b = normalize_prefix(src.prefix), normalize_prefix(dst.prefix)
    return a.startswith(b) or b.startswith(a)


def _run_on_pair(source_url: str, target_url: str, engine_name: str, show_bar: bool, **options: Any) -> Any:
    """Open both locations, run ``migration.copier.<engine_name>`` (``sync`` or ``verify``) on them; close.

    With a progress bar if asked. The engine is imported once the target's
    listing is under way (``_open_pair``): its import is then off the way to
    the first request.
    """
    import importlib

    _cap_malloc_arenas()
    src, src_prefix, dst, dst_prefix, early = _open_pair(source_url, target_url, options["workers"])
    try:
        engine = getattr(importlib.import_module("migration.copier"), engine_name)
        options.update(source_prefix=src_prefix, target_prefix=dst_prefix, early=early)
        # A local target syncs the filesystem once at the end instead of fsyncing every object.
        batched = getattr(dst, "batched", None)
        with batched() if batched is not None else contextlib.nullcontext():
            if show_bar:
                with _Bar() as bar:
                    return engine(src, dst, progress=bar.listener, **options)
            return engine(src, dst, **options)
    finally:
        src.close()
        dst.close()


class _Bar:
    """A rich progress bar on stderr, fed by the engine's ``Progress`` events (thread-safe)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        from migration.copier import Progress as EngineProgress

        self.console = Console(stderr=True)
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}/{task.fields[objects]} obj"),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None
        self._lock = threading.Lock()
        self._listing = False
        self._by_objects = False
        self._done = 0
        bar = self

        class Listener(EngineProgress):
            def phase(self, name: str, objects: int, nbytes: int) -> None:
                bar.phase(name, objects, nbytes)

            def advance(self, objects: int = 0, nbytes: int = 0) -> None:
                bar.advance(objects, nbytes)

        self.listener = Listener()

    def __enter__(self) -> "_Bar":
        self._bar.start()
        self._task = self._bar.add_task("listing", total=None, done=0, objects="?")
        self._listing = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def phase(self, name: str, objects: int, nbytes: int) -> None:
        if self._listing:
            self._bar.remove_task(self._task)
            self._listing = False
        self._done = 0
        # A phase without bytes (delete) advances by objects instead.
        self._by_objects = nbytes == 0
        # A streamed phase does not know its size up front (0, 0): the bar then just counts.
        total = (objects if self._by_objects else nbytes) or None
        self._task = self._bar.add_task(name, total=total, done=0, objects=objects or "?")

    def advance(self, objects: int, nbytes: int) -> None:
        with self._lock:  # called from every worker thread
            self._done += objects
            done = self._done
        step = objects if self._by_objects else nbytes
        self._bar.update(self._task, advance=step, done=done)


def _print_summary(report: Any, as_json: bool) -> None:
    from migration.report import render_rich, render_text

    if as_json:
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    if sys.stdout.isatty():
        from rich.console import Console

        render_rich(report, Console())
    else:
        typer.echo(render_text(report))


def _print_planned(action: str, key: str, reason: str) -> None:
    """One line of a dry run's plan, printed as the planner decides it.

    Written to ``sys.stdout`` as it is buffered (line by line on a terminal), not
    through ``typer.echo``: echo looks up its stream, checks for a terminal and
    flushes on every call, which was 65% of a 1M-object dry run's planner thread.
    A key that is not printable (a newline, a terminal escape, which a local
    file name or an Azure blob name can hold) is shown escaped, one plan line per key.
    """
    shown = key if key.isprintable() else ascii(key)[1:-1]
    try:
        sys.stdout.write(_plan_line(action, shown, reason))
    except UnicodeEncodeError:  # a stream whose encoding cannot hold the key (e.g. LANG=C): escaped as well
        sys.stdout.write(_plan_line(action, ascii(key)[1:-1], reason))


def _plan_line(action: str, shown: str, reason: str) -> str:
    return f"copy    {shown}  ({reason})\n" if action == "copy" else f"delete  {shown}\n"


def _show_progress(as_json: bool, no_progress: bool) -> bool:
    return not (as_json or no_progress) and sys.stderr.isatty()


def migrate(
    source: Annotated[str, typer.Argument(metavar="SRC", help=_LOCATION_HELP)],
    target: Annotated[str, typer.Argument(metavar="DST", help="Where the copies go (same forms as SRC).")],
    include: _Include = None,
    exclude: _Exclude = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete target objects the source does not have.")] = False,
    max_delete: Annotated[
        int, typer.Option("--max-delete", min=0, metavar="N",
                          help="With --delete, refuse (exit 2, nothing written) if more than N would go.")
    ] = 100,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and totals; write nothing.")] = False,
    workers: Annotated[int, _workers_option("Parallel transfers (between two local directories: worker "
                                            "processes, at most one per core, which also bound the "
                                            "listing's folder scanners).")] = 32,
    strict: Annotated[
        bool, typer.Option("--strict", help="After copying, re-list and re-read every target object's bytes.")
    ] = False,
    as_json: _Json = False,
    no_progress: _NoProgress = False,
    shard: _Shard = None,
) -> None:
    """Copy new and changed objects from SRC to DST, verify, and report (exit 0 only if all verified)."""

    def run() -> int:
        from migration.rules import Shard

        plan_output: dict[str, Any] = {}
        if dry_run:
            # Streamed: printed as decided (text), or the first JSON_PLAN_LIMIT kept (JSON).
            plan_output = {"max_planned": JSON_PLAN_LIMIT} if as_json else {"on_planned": _print_planned,
                                                                             "max_planned": 0}
        report = _run_on_pair(source, target, "sync", _show_progress(as_json, no_progress) and not dry_run,
                              include=include or (), exclude=exclude or (), delete=delete, max_delete=max_delete,
                              dry_run=dry_run, workers=workers, strict=strict, shard=Shard.parse(shard),
                              **plan_output)
        if dry_run and delete and report.objects_to_delete > max_delete:
            typer.echo(f"spotshift: note: a real run would refuse: {report.objects_to_delete} deletions is more "
                       f"than --max-delete {max_delete}", err=True)
        _print_summary(report, as_json)
        return EXIT_OK if report.ok else EXIT_MISMATCH

    raise typer.Exit(_guarded(run))


def verify(
    source: Annotated[str, typer.Argument(metavar="SRC", help=_LOCATION_HELP)],
    target: Annotated[str, typer.Argument(metavar="DST", help="The copy to check (same forms as SRC).")],
    include: _Include = None,
    exclude: _Exclude = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also re-read every target object's bytes and recompute checksums.")
    ] = False,
    workers: Annotated[int, _workers_option("Parallel checks (a local listing's folder scanner processes: "
                                            "at most this many, one per core).")] = 32,
    as_json: _Json = False,
    no_progress: _NoProgress = False,
    shard: _Shard = None,
) -> None:
    """Check that DST holds a verified copy of every SRC object; writes nothing (exit 0 only if all match)."""

    def run() -> int:
        from migration.rules import Shard

        report = _run_on_pair(source, target, "verify", deep and _show_progress(as_json, no_progress),
                              include=include or (), exclude=exclude or (), deep=deep, workers=workers,
                              shard=Shard.parse(shard))
        _print_summary(report, as_json)
        return EXIT_OK if report.verified else EXIT_MISMATCH

    raise typer.Exit(_guarded(run))


def register(cli: typer.Typer) -> None:
    """Add the ``migrate`` and ``verify`` commands to the ``spotshift`` Typer app."""
    cli.command("migrate")(migrate)
    cli.command("verify")(verify)


def _standalone() -> typer.Typer:
    app = typer.Typer(name="spotshift", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    return app


if __name__ == "__main__":
    _standalone()()
