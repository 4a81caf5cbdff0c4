"""The cutover's late-write check: no source object may be newer than the freeze marker.

The gcp-source stack writes the marker object only after its worker group has
scaled to zero and the API VM serves read-only, so the marker's update time is
the moment the source stopped taking writes. After the strict final round the
cutover lists the source once more (streamed, one page at a time) and refuses
when any object was written at or after that moment: such a write may have
landed after the round's own listing and would be left behind on GCP.
"""

from __future__ import annotations

from datetime import datetime

from app.storage.base import ObjectNotFound, ObjectStore

#: How many offending keys the refusal names.
SHOWN_KEYS = 5


class LateWriteError(Exception):
    """The source took writes after the freeze marker: the cutover must not go ahead."""


def check_no_writes_after_freeze(source: ObjectStore, marker_key: str, prefix: str = "") -> datetime:
    """Return the marker's update time; raise ``LateWriteError`` when an object under ``prefix`` is as new or newer."""
    try:
        marker = source.head(marker_key)
    except ObjectNotFound:
        raise LateWriteError(
            f"cutover refused: the freeze marker {source.url}/{marker_key} does not exist; run "
            "`pulumi up -s gcp-source` with spotshift:freeze true so the marker is written after the workers stop"
        ) from None
    if marker.updated is None:
        raise LateWriteError(f"cutover refused: {source.url} reports no update time for the freeze marker {marker_key}")
    frozen_at = marker.updated
    late_count = 0
    shown: list[str] = []
    for info in source.list(prefix):
        if info.key == marker_key or info.updated is None or info.updated < frozen_at:
            continue
        late_count += 1
        if len(shown) < SHOWN_KEYS:
            shown.append(info.key)
    if late_count:
        more = f" (+{late_count - len(shown)} more)" if late_count > len(shown) else ""
        raise LateWriteError(
            f"cutover refused: {late_count} object(s) in {source.url} were written at or after the freeze "
            f"({frozen_at.isoformat()}), so the final round may have missed them: {', '.join(shown)}{more}. "
            "Stop what still writes to the bucket, write a new marker (`pulumi up -s gcp-source --replace` "
            "on the spotshift-freeze-object resource, see the README's runbook), then bump spotshift:syncRound "
            "for another cutover round"
        )
    return frozen_at
