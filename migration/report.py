"""What a migration run returns: ``SyncReport`` and ``VerifyReport``, and their one-screen summaries.

Reports are plain dataclasses so the CLI, the Pulumi provider and tests read
the same numbers; ``to_dict()`` gives a JSON-able form that holds location
URLs (``gs://bucket/prefix``) but never a credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024

#: How many failures or mismatches the text summary shows before "(+N more)".
SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    """One object that failed to copy or did not verify, and why."""

    key: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        """JSON-able form."""
        return {"key": self.key, "reason": self.reason}


def _rate(amount: float, seconds: float) -> float:
    return round(amount / seconds, 2) if seconds > 0 else 0.0


@dataclass
class SyncReport:
    """Outcome of ``sync``: what was planned, copied, skipped, failed and deleted, and whether it verified."""

    source: str
    target: str
    dry_run: bool = False
    objects_source: int = 0
    objects_target: int = 0
    objects_planned: int = 0
    bytes_planned: int = 0
    objects_copied: int = 0
    bytes_copied: int = 0
    objects_skipped: int = 0
    bytes_skipped: int = 0
    objects_failed: int = 0
    bytes_failed: int = 0
    objects_to_delete: int = 0
    objects_deleted: int = 0
    objects_delete_failed: int = 0
    objects_ignored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failures: list[Problem] = field(default_factory=list)
    mismatches: list[Problem] = field(default_factory=list)
    planned_copies: list[Problem] = field(default_factory=list)
    """Dry run only: what would be copied, and why."""
    planned_deletes: list[str] = field(default_factory=list)
    """Dry run only: what would be deleted."""
    verified: bool = False
    deep: bool = False
    duration_seconds: float = 0.0

    @property
    def objects_per_second(self) -> float:
        """Objects copied per second of the whole run."""
        return _rate(self.objects_copied, self.duration_seconds)

    @property
    def mib_per_second(self) -> float:
        """MiB copied per second of the whole run."""
        return _rate(self.bytes_copied / MIB, self.duration_seconds)

    @property
    def ok(self) -> bool:
        """True when nothing failed and the target verified (a dry run is ok once planned)."""
        if self.dry_run:
            return True
        return self.verified and not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (no credentials: locations are URLs without account keys)."""
        return {
            "kind": "sync",
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "objects_source": self.objects_source,
            "objects_target": self.objects_target,
            "objects_planned": self.objects_planned,
            "bytes_planned": self.bytes_planned,
            "objects_copied": self.objects_copied,
            "bytes_copied": self.bytes_copied,
            "objects_skipped": self.objects_skipped,
            "bytes_skipped": self.bytes_skipped,
            "objects_failed": self.objects_failed,
            "bytes_failed": self.bytes_failed,
            "objects_to_delete": self.objects_to_delete,
            "objects_deleted": self.objects_deleted,
            "objects_delete_failed": self.objects_delete_failed,
            "objects_ignored": self.objects_ignored,
            "reasons": dict(self.reasons),
            "failures": [p.to_dict() for p in self.failures],
            "mismatches": [p.to_dict() for p in self.mismatches],
            **(
                {
                    "planned_copies": [p.to_dict() for p in self.planned_copies],
                    "planned_deletes": list(self.planned_deletes),
                }
                if self.dry_run
                else {}
            ),
            "verified": self.verified,
            "deep": self.deep,
            "duration_seconds": round(self.duration_seconds, 3),
            "objects_per_second": self.objects_per_second,
            "mib_per_second": self.mib_per_second,
        }


@dataclass
class VerifyReport:
    """Outcome of ``verify``: every source object present on the target with the same content."""

    source: str
    target: str
    deep: bool = False
    objects_checked: int = 0
    bytes_checked: int = 0
    objects_matched: int = 0
    objects_missing: int = 0
    objects_extra: int = 0
    mismatches: list[Problem] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def verified(self) -> bool:
        """True when every source object matched (objects only on the target do not count)."""
        return not self.mismatches

    @property
    def ok(self) -> bool:
        """Same as ``verified``; named like ``SyncReport.ok`` for callers that handle both."""
        return self.verified

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": "verify",
            "source": self.source,
            "target": self.target,
            "deep": self.deep,
            "objects_checked": self.objects_checked,
            "bytes_checked": self.bytes_checked,
            "objects_matched": self.objects_matched,
            "objects_missing": self.objects_missing,
            "objects_extra": self.objects_extra,
            "mismatches": [p.to_dict() for p in self.mismatches],
            "verified": self.verified,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def human_bytes(count: float) -> str:
    """``1.5 MiB`` style."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - loop always returns


def summary_rows(report: SyncReport | VerifyReport) -> list[tuple[str, str, str]]:
    """The summary as ``(what, objects, bytes)`` rows, shared by the plain and the rich renderings."""
    if isinstance(report, SyncReport):
        rows = [
            ("planned" if not report.dry_run else "would copy", str(report.objects_planned),
             human_bytes(report.bytes_planned)),
            ("copied", str(report.objects_copied), human_bytes(report.bytes_copied)),
            ("skipped (unchanged)", str(report.objects_skipped), human_bytes(report.bytes_skipped)),
            ("failed", str(report.objects_failed), human_bytes(report.bytes_failed)),
        ]
        if report.objects_to_delete or report.objects_deleted:
            rows.append(("deleted" if not report.dry_run else "would delete",
                         str(report.objects_deleted if not report.dry_run else report.objects_to_delete), ""))
        if report.objects_delete_failed:
            rows.append(("delete failed", str(report.objects_delete_failed), ""))
        if report.objects_ignored:
            rows.append(("ignored (folder markers)", str(report.objects_ignored), ""))
        rows.append(("throughput", f"{report.objects_per_second:.1f} obj/s", f"{report.mib_per_second:.1f} MiB/s"))
        rows.append(("duration", f"{report.duration_seconds:.2f} s", ""))
        verdict = "dry run, nothing written" if report.dry_run else ("yes" if report.verified else "NO")
        rows.append(("verified" + (" (deep)" if report.deep else ""), verdict, ""))
        return rows
    return [
        ("checked", str(report.objects_checked), human_bytes(report.bytes_checked)),
        ("matched", str(report.objects_matched), ""),
        ("missing on target", str(report.objects_missing), ""),
        ("different", str(len(report.mismatches) - report.objects_missing), ""),
        ("only on target", str(report.objects_extra), ""),
        ("duration", f"{report.duration_seconds:.2f} s", ""),
        ("verified" + (" (deep)" if report.deep else ""), "yes" if report.verified else "NO", ""),
    ]


def problems(report: SyncReport | VerifyReport) -> list[Problem]:
    """Failures then mismatches, each key once."""
    seen: set[str] = set()
    out: list[Problem] = []
    for problem in [*getattr(report, "failures", []), *report.mismatches]:
        if problem.key not in seen:
            seen.add(problem.key)
            out.append(problem)
    return out


def render_text(report: SyncReport | VerifyReport) -> str:
    """The one-screen summary as plain text (no terminal needed, no rich import)."""
    title = f"{'migrate' if isinstance(report, SyncReport) else 'verify'} {report.source} -> {report.target}"
    rows = summary_rows(report)
    width = max(len(r[0]) for r in rows)
    count_width = max(len(r[1]) for r in rows)
    lines = [title]
    lines += [f"  {what:<{width}}  {objects:>{count_width}}  {size}".rstrip() for what, objects, size in rows]
    lines += _problem_lines(report)
    return "\n".join(lines)


def _problem_lines(report: SyncReport | VerifyReport) -> list[str]:
    found = problems(report)
    lines = [f"  ! {p.key}: {p.reason}" for p in found[:SHOWN_PROBLEMS]]
    if len(found) > SHOWN_PROBLEMS:
        lines.append(f"  ! (+{len(found) - SHOWN_PROBLEMS} more; use --json for the full list)")
    return lines


def render_rich(report: SyncReport | VerifyReport, console: Any) -> None:
    """Print the summary as a rich table on ``console``."""
    from rich.table import Table

    title = f"{'migrate' if isinstance(report, SyncReport) else 'verify'} {report.source} → {report.target}"
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("objects", justify="right")
    table.add_column("bytes", justify="right")
    for what, objects, size in summary_rows(report):
        style = None
        if what.startswith("verified"):
            style = "green" if objects in ("yes", "dry run, nothing written") else "bold red"
        elif what == "failed" and objects != "0":
            style = "bold red"
        table.add_row(what, objects, size, style=style)
    console.print(table)
    for line in _problem_lines(report):
        console.print(line, style="red", markup=False, highlight=False)
