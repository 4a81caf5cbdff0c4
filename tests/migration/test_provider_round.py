"""The progress line a running round shows in `pulumi up`, as the child's events arrive."""

from __future__ import annotations

from migration.provider_round import ProgressView


def test_a_copy_whose_streamed_plan_is_still_empty_says_so_instead_of_zero_of_zero() -> None:
    view = ProgressView()
    view.apply({"event": "phase", "name": "copy", "objects": 0, "bytes": 0})
    line = view.line(now=view.phase_started + 3)
    assert line == "copy: comparing the listings, no object planned yet (3s)"
    assert "0/0" not in line


def test_the_line_follows_the_plan_as_it_grows() -> None:
    view = ProgressView()
    view.apply({"event": "phase", "name": "copy", "objects": 0, "bytes": 0})
    view.apply({"event": "progress", "objects": 3, "bytes": 3072, "planned_objects": 10, "planned_bytes": 10240})
    line = view.line(now=view.phase_started + 2)
    assert line.startswith("copy: 3/10 objects, 3.0 KiB/10.0 KiB, 1.5 KiB/s, about ")
    assert view.copied_objects == 3 and view.copy_objects_total == 10
