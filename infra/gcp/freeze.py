"""``FreezeMarker``: the object that records when the source stopped taking writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

#: Where the marker lives: outside every prefix the workload writes (jobs/, queue/, leases/, uploads/, results/).
FREEZE_MARKER_KEY = "spotshift-freeze/marker.json"


@dataclass
class FreezeMarkerArgs:
    """Inputs of :class:`FreezeMarker`."""

    bucket: pulumi.Input[str]
    """The bucket the marker is written to (the one the cutover copies)."""
    stopped: Sequence[pulumi.Resource]
    """What must be done first: the worker group at size 0 (waited for) and the read-only API VM."""
    stack: str
    """Stack name, recorded in the marker for whoever reads it."""


class FreezeMarker(pulumi.ComponentResource):
    """One small object, written only after the workers are gone and the API serves read-only.

    Its update time is the freeze's moment: the cutover refuses when a source object is newer
    (``migration.freeze``). ``frozen`` resolves only once the object exists, so the stack cannot
    report frozen before the writers have stopped.
    """

    key: pulumi.Output[str]
    generation: pulumi.Output[int]
    frozen: pulumi.Output[bool]

    def __init__(self, name: str, args: FreezeMarkerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:gcp:FreezeMarker", name, None, opts)

        marker = gcp.storage.BucketObject(
            f"{name}-object",
            bucket=args.bucket,
            name=FREEZE_MARKER_KEY,
            content=json.dumps({"frozen": True, "stack": args.stack}, sort_keys=True),
            content_type="application/json",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.stopped)),
        )

        self.key = marker.output_name
        self.generation = marker.generation
        self.frozen = pulumi.Output.all(marker.output_name, marker.generation).apply(lambda _: True)
        self.register_outputs({"key": self.key, "generation": self.generation, "frozen": self.frozen})
