"""Technical failure reasons of jobs, told in words a person understands."""

from __future__ import annotations

import re

#: First match wins: (pattern in the technical reason, what it means for the person who uploaded).
_EXPLANATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), words)
    for pattern, words in (
        (
            r"too many pixels|image too large",
            "The image has more pixels than this service accepts. Scale it down and upload it again.",
        ),
        (
            r"truncated|decoder error|cannot decode|corrupt|broken data stream|unrecognized data stream",
            "The file is damaged or incomplete (cut off during copying or download?), so it cannot be "
            "read as an image. Save or export it again and upload the new file.",
        ),
        (
            r"not a supported image|cannot identify image",
            "The file is not an image in a supported format (PNG, JPEG, GIF, WebP, BMP or TIFF).",
        ),
        (r"input missing", "The uploaded file is no longer in storage, so the job cannot run. Upload it again."),
        (
            r"timed out|timeout|time limit",
            "Processing took longer than this service allows for one image. A smaller image may work.",
        ),
        (
            r"memory",
            "The image needs more memory to process than this service allows. A smaller image may work.",
        ),
        (
            r"reading the input failed|storage",
            "Storage could not hand the uploaded file to the worker. The job is retried; if it keeps "
            "failing, upload the image again later.",
        ),
        (
            r"worker was lost|gave up after",
            "The machines processing this job kept stopping before it finished (spot VMs can be "
            "reclaimed at any time). Upload the image again.",
        ),
        (r"document", "The job's record in storage is damaged, so its state is unknown. Upload the image again."),
    )
)

_UNKNOWN = "Processing failed for a reason this service does not recognise. The technical reason is shown below."


def explain_error(error: str | None) -> str | None:
    """A person's explanation of a job's technical ``error`` (None when there is no error)."""
    if not error:
        return None
    for pattern, words in _EXPLANATIONS:
        if pattern.search(error):
            return words
    return _UNKNOWN
