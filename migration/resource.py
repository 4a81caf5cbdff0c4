"""The ``ObjectMigration`` component and the thin dynamic provider that runs the copier.

The provider is pickled (dill, ``recurse=True``) into the stack's state and
unpickled later in a separate process, so it captures nothing but plain
values: every method imports what it needs and builds its stores *inside*
the call. Credentials come from the operator's environment (Application
Default Credentials for GCS, ``DefaultAzureCredential`` for the account URL)
or from inputs passed as Pulumi secrets, which stay secret in the state.
``delete`` never deletes migrated data: destroying the resource only forgets it.

The provider class itself lives in ``migration.provider`` (a stable name, see
there); ``MigrationProvider`` is re-exported here because stacks created by
0.1.0 pickled it as ``migration.resource.MigrationProvider``. A round runs in
a child process (``migration.provider_round``) under the resource's deadline,
and reports progress to ``pulumi up`` through the engine (``migration.engine_log``).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

# 0.1.0 stacks pickled this name: it must keep resolving (migration/provider.py says why).
from migration.provider import MigrationProvider

#: Keys under which the runner can receive credentials; kept secret in state.
SECRET_INPUTS = ("azure_connection_string", "gcs_credentials_json")

#: A change to any of these starts a new copy round on the next ``pulumi up``.
ROUND_INPUTS = (
    "source_bucket",
    "source_prefix",
    "gcs_project",
    "target_account_url",
    "target_container",
    "target_prefix",
    "include",
    "exclude",
    "sync_round",
    "strict",
)

#: Lease objects belong to the VMs that hold them, never to the target cloud.
DEFAULT_EXCLUDE = ("leases/*",)

#: Outputs the provider computes (seeded as None so Pulumi knows them up front).
RESULT_OUTPUTS = (
    "objects_planned",
    "objects_copied",
    "bytes_copied",
    "objects_skipped",
    "bytes_skipped",
    "objects_failed",
    "objects_deleted",
    "failures",
    "verified",
    "manifest_digest",
    "source_url",
    "target_url",
    "completed_at",
)

#: Default of ``deadline_seconds``: a round stops cleanly after this long (``pulumi up`` again resumes).
DEFAULT_DEADLINE_SECONDS = 4 * 3600
#: Default of ``progress_interval``: seconds between status lines in ``pulumi up``.
DEFAULT_PROGRESS_SECONDS = 5.0
#: Extra minutes the engine's custom timeouts give beyond the provider's own deadline.
TIMEOUT_MARGIN_MINUTES = 10
#: The dynamic resource's type token (its URN names it).
RUN_TYPE = "pulumi-python:dynamic/spotshift:MigrationRun"
#: The component's type token.
COMPONENT_TYPE = "spotshift:migration:ObjectMigration"


class MigrationError(Exception):
    """A copy round did not end with every object verified."""


def _source_store(props: Mapping[str, Any]):
    """Build the GCS source store from plain inputs (inside the provider process)."""
    import json

    from app.storage.gcs import GcsStore

    client = None
    if props.get("gcs_credentials_json"):
        from google.cloud import storage
        from google.oauth2 import service_account

        info = json.loads(props["gcs_credentials_json"])
        credentials = service_account.Credentials.from_service_account_info(info)
        client = storage.Client(project=props.get("gcs_project") or info.get("project_id"), credentials=credentials)
    return GcsStore(props["source_bucket"], project=props.get("gcs_project") or None, client=client)


def _target_store(props: Mapping[str, Any]):
    """Build the Azure target store from plain inputs (inside the provider process)."""
    from app.storage.factory import build_store

    return build_store(
        "azure",
        azure_container=props["target_container"],
        azure_connection_string=props.get("azure_connection_string") or None,
        azure_account_url=props.get("target_account_url") or None,
    )


def _target_account(props: Mapping[str, Any]) -> str:
    """Which Azure account the target is, without credentials: the URL minus any SAS, or the
    connection string's BlobEndpoint / AccountName."""
    url = props.get("target_account_url")
    if url:
        return str(url).split("?", 1)[0].rstrip("/")
    fields = dict(
        part.split("=", 1) for part in str(props.get("azure_connection_string") or "").split(";") if "=" in part
    )
    endpoint = fields.get("BlobEndpoint") or fields.get("AccountName") or ""
    return endpoint.rstrip("/")


def _where(props: Mapping[str, Any]) -> str:
    src = f"gs://{props.get('source_bucket')}/{props.get('source_prefix') or ''}".rstrip("/")
    dst = f"az://{props.get('target_container')}/{props.get('target_prefix') or ''}".rstrip("/")
    return f"{src} -> {dst} ({_target_account(props) or 'connection string'})"


def _selection(props: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's location and filter arguments, from the resource's inputs."""
    return {
        "source_prefix": props.get("source_prefix") or "",
        "target_prefix": props.get("target_prefix") or "",
        "include": list(props.get("include") or []),
        "exclude": list(props.get("exclude") or []),
    }


def _digest(target: Any, selection: Mapping[str, Any]) -> str:
    from migration import copier

    return copier.manifest_digest(target, selection["target_prefix"], include=selection["include"],
                                  exclude=selection["exclude"])


def _plain(props: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs with any secret wrapper removed (an engine that sends secrets marked, or one that does not)."""
    from pulumi.runtime import rpc

    return {key: rpc.unwrap_rpc_secret(value) for key, value in props.items()}


def _secrets(props: Mapping[str, Any]) -> list[str]:
    """Every credential among the inputs (to keep out of messages)."""
    values = [str(props.get(key) or "") for key in SECRET_INPUTS]
    url = str(props.get("target_account_url") or "")
    if "?" in url:
        values.append(url.split("?", 1)[1])
    return [value for value in values if value]


def run_round(props: Mapping[str, Any]) -> dict[str, Any]:
    """One copy round (plan, copy, verify, digest) in a child process, under the deadline, with progress."""
    from migration import provider_round
    from migration.engine_log import EngineLog

    strict = bool(props.get("strict"))
    deadline = float(props.get("deadline_seconds") or DEFAULT_DEADLINE_SECONDS)
    interval = float(props.get("progress_interval") or DEFAULT_PROGRESS_SECONDS)
    where = _where(props)
    log = EngineLog.for_process(str(props.get("resource_urn") or ""))
    try:
        log.info(f"copy round {int(props.get('sync_round') or 0)}{' (strict)' if strict else ''}: {where}; "
                 f"deadline {provider_round.human_seconds(deadline)}")
        try:
            raw = provider_round.run(
                props, deadline_seconds=deadline, interval_seconds=interval,
                on_status=lambda view: log.status(view.line()), on_note=lambda view: log.info(view.line()),
                secrets=_secrets(props),
            )
        except provider_round.RoundStopped as stopped:
            message = _stopped_message(where, stopped)
            log.info(message)
            raise MigrationError(message) from None
        except provider_round.RoundFailed as failed:
            raise MigrationError(f"copy {where} failed: {failed}") from None
        results = _outputs(raw["sync"], raw["digest"], strict, props)
        if props.get("freeze_marker"):
            source = _source_store(props)
            try:
                _refuse_late_writes(source, str(props["freeze_marker"]), _selection(props)["source_prefix"], props)
            finally:
                source.close()
        log.info(f"copy round done: {int(results['objects_copied']):,} copied "
                 f"({provider_round.human_bytes(results['bytes_copied'])}), {int(results['objects_skipped']):,} "
                 f"unchanged, {int(results['objects_failed']):,} failed, verified={results['verified']}")
        return results
    finally:
        log.close()


def _stopped_message(where: str, stopped: Any) -> str:
    view = stopped.view
    if view.phase == "listing":
        done = "before the listings finished; nothing was copied"
    else:
        done = (f"{view.copied_objects:,} of {view.copy_objects_total:,} planned objects "
                f"({_human(view.copied_bytes)} of {_human(view.copy_bytes_total)}) were finished")
        if view.phase != "copy":
            done += f" and the {view.phase} phase was under way"
    return (f"copy round {where} {stopped}: {done}. Every object written is complete and stays. "
            "Run `pulumi up` again to continue: the next round copies only what is missing "
            "(spotshift:migrationDeadlineMinutes sets the deadline)")


def _human(nbytes: int) -> str:
    from migration.provider_round import human_bytes

    return human_bytes(nbytes)


def _refuse_late_writes(source: Any, marker_key: str, prefix: str, props: Mapping[str, Any]) -> None:
    """Cutover: fail the round when the source took writes after its freeze marker (see ``migration.freeze``)."""
    from migration import freeze

    try:
        freeze.check_no_writes_after_freeze(source, marker_key, prefix)
    except freeze.LateWriteError as err:
        raise MigrationError(f"{err} [{_where(props)}]") from err


def _outputs(sync: dict, digest: str, strict: bool, props: Mapping[str, Any]) -> dict[str, Any]:
    failures = [f"{f['key']}: {f['reason']}" for f in sync.get("failures", [])]
    failed_keys = {f["key"] for f in sync.get("failures", [])}
    # An object that failed to copy is also missing on verify: name it once.
    failures += [f"{m['key']}: {m['reason']}" for m in sync.get("mismatches", []) if m["key"] not in failed_keys]
    verified = bool(sync.get("verified")) and not sync.get("objects_failed")
    if strict and not verified:
        shown = "; ".join(failures[:10]) or "verification failed"
        more = f" (+{len(failures) - 10} more)" if len(failures) > 10 else ""
        raise MigrationError(
            f"strict verification failed for {_where(props)}: {len(failures)} object(s) missing or different: "
            f"{shown}{more}"
        )
    return {
        "objects_planned": sync.get("objects_planned", 0),
        "objects_copied": sync.get("objects_copied", 0),
        "bytes_copied": sync.get("bytes_copied", 0),
        "objects_skipped": sync.get("objects_skipped", 0),
        "bytes_skipped": sync.get("bytes_skipped", 0),
        "objects_failed": sync.get("objects_failed", 0),
        "objects_deleted": sync.get("objects_deleted", 0),
        "failures": failures[:100],
        "verified": verified,
        "manifest_digest": digest,
        "source_url": sync.get("source"),
        "target_url": sync.get("target"),
        "completed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _resource_id(props: Mapping[str, Any]) -> str:
    """A stable id naming the pair of locations (no credentials in it)."""
    pair = "|".join([str(props.get("source_bucket") or ""), _prefix(props.get("source_prefix")),
                     _target_account(props), str(props.get("target_container") or ""),
                     _prefix(props.get("target_prefix"))])
    return "migration-" + hashlib.sha256(pair.encode()).hexdigest()[:16]


def _prefix(value: Any) -> str:
    """A prefix as the engine uses it: ``a/b`` and ``a/b/`` (and None and "") are the same."""
    text = str(value or "").strip("/")
    return text + "/" if text else ""


def _round_changes(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """The inputs whose change means a new copy round (locations, filters, strictness, ``sync_round``)."""
    changed = [key for key in ROUND_INPUTS if _norm(key, olds.get(key)) != _norm(key, news.get(key))]
    # A connection string is secret, but which account it names is not: a new account is a new round.
    if _target_account(olds) != _target_account(news):
        changed.append("target account")
    return changed


def _stored_changes(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """Other inputs that changed (a rotated credential or SAS, the deadline, ...): stored, no copy."""
    # The account URL's SAS is such a credential; the other round inputs are compared as locations.
    keys = [key for key in news if key not in RESULT_OUTPUTS
            and (key not in ROUND_INPUTS or key == "target_account_url")]
    return [key for key in keys if _unset_as_blank(olds.get(key)) != _unset_as_blank(news.get(key))]


def _unset_as_blank(value: Any) -> Any:
    return "" if value is None else value


def provider_create(props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
    """First round: copy everything, verify, digest."""
    props = _plain(props)
    return pulumi.dynamic.CreateResult(id_=_resource_id(props), outs={**props, **_guarded_round(props)})


def provider_diff(olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
    """Changes when a round input or any stored input (a credential) changed; never a replacement."""
    olds, news = _plain(olds), _plain(news)
    changed = _round_changes(olds, news) or _stored_changes(olds, news)
    return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)


def provider_update(olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
    """Another round when a round input changed (copies only what is new or changed); otherwise the
    new inputs (e.g. a rotated credential) are stored with the last round's results, copying nothing."""
    olds, news = _plain(olds), _plain(news)
    if not _round_changes(olds, news):
        from migration.engine_log import EngineLog

        log = EngineLog.for_process(str(news.get("resource_urn") or ""))
        log.info(f"stored the changed inputs ({', '.join(sorted(_stored_changes(olds, news)))}); "
                 "no copy round (bump spotshift:syncRound for one)")
        log.close()
        return pulumi.dynamic.UpdateResult(outs={**news, **{key: olds.get(key) for key in RESULT_OUTPUTS}})
    return pulumi.dynamic.UpdateResult(outs={**news, **_guarded_round(news)})


def provider_read(id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
    """The last known state, as recorded by the last round: no listing, no cloud call, no other stack.

    ``pulumi refresh`` runs this; a deliberate check of both sides is ``spotshift verify``.
    """
    return pulumi.dynamic.ReadResult(id_=id_, outs=dict(props))


def _guarded_round(props: dict[str, Any]) -> dict[str, Any]:
    try:
        return run_round(props)
    except MigrationError:
        raise
    except Exception as err:
        from migration.provider_round import redact

        # `from None`: the dynamic host sends the whole traceback to the engine, and a chained
        # original error could quote a credential.
        raise MigrationError(redact(f"copy {_where(props)} failed: {err}", _secrets(props))) from None


def _norm(key: str, value: Any) -> Any:
    if key in ("source_prefix", "target_prefix"):
        return _prefix(value)
    if key == "target_account_url":
        return str(value or "").split("?", 1)[0].rstrip("/")
    if isinstance(value, (list, tuple)):
        return list(value)
    if key == "strict":
        return bool(value)
    return value


def _copy_urn(name: str, opts: pulumi.ResourceOptions | None) -> str:
    """The copy resource's URN, from names alone (an Output of the component's URN would make the child
    depend on its parent); "" under a parent other than the stack, whose type chain is not known here."""
    if opts is not None and opts.parent is not None:
        return ""
    return (f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::"
            f"{COMPONENT_TYPE}${RUN_TYPE}::{name}-copy")


class _MigrationRun(pulumi.dynamic.Resource, module="spotshift", name="MigrationRun"):
    """The dynamic resource whose create/update run a copy round."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        outputs = {key: None for key in RESULT_OUTPUTS}
        super().__init__(MigrationProvider(), name, {**outputs, **props}, opts)


@dataclass
class ObjectMigrationArgs:
    """Inputs of an ``ObjectMigration``."""

    source_bucket: pulumi.Input[str]
    """GCS bucket to copy from (the gcp-source stack's ``bucket_name``)."""
    target_container: pulumi.Input[str]
    """Azure Blob container to copy into."""
    target_account_url: pulumi.Input[str] | None = None
    """``https://<account>.blob.core.windows.net``; authenticated with ``DefaultAzureCredential``."""
    source_prefix: pulumi.Input[str] = ""
    """Only objects under this prefix are copied."""
    target_prefix: pulumi.Input[str] = ""
    """Where those objects land in the container."""
    gcs_project: pulumi.Input[str] | None = None
    """GCP project for the storage client (billing/quota)."""
    include: Sequence[str] = ()
    """Glob filters; when set, only matching keys are copied."""
    exclude: Sequence[str] = DEFAULT_EXCLUDE
    """Glob filters of keys never copied (default: the queue's lease objects)."""
    sync_round: pulumi.Input[int] = 0
    """Bump to run another copy round."""
    strict: pulumi.Input[bool] = False
    """Re-read every target object's bytes and fail the update if one differs (cutover)."""
    freeze_marker: pulumi.Input[str] | None = None
    """Key of the source's freeze marker: after the round, fail if any source object is newer (cutover)."""
    workers: pulumi.Input[int] | None = None
    """Parallel copies (default: the engine's)."""
    azure_connection_string: pulumi.Input[str] | None = None
    """Optional credential instead of Entra ID; stored as a secret."""
    gcs_credentials_json: pulumi.Input[str] | None = None
    """Optional service-account key JSON instead of ADC; stored as a secret."""
    deadline_minutes: float = DEFAULT_DEADLINE_SECONDS / 60
    """A round stops cleanly after this long and fails the update; ``pulumi up`` again resumes it."""
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS
    """Seconds between progress lines in ``pulumi up``."""


class ObjectMigration(pulumi.ComponentResource):
    """Copies a GCS bucket into an Azure container during ``pulumi up``, verified and incremental."""

    objects_copied: pulumi.Output[int]
    bytes_copied: pulumi.Output[int]
    objects_skipped: pulumi.Output[int]
    bytes_skipped: pulumi.Output[int]
    objects_failed: pulumi.Output[int]
    verified: pulumi.Output[bool]
    manifest_digest: pulumi.Output[str]
    completed_at: pulumi.Output[str]

    def __init__(self, name: str, args: ObjectMigrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        props: dict[str, Any] = {
            "source_bucket": args.source_bucket,
            "source_prefix": args.source_prefix,
            "gcs_project": args.gcs_project,
            # An account URL carrying a SAS is a credential: keep that one secret in the state.
            "target_account_url": pulumi.Output.from_input(args.target_account_url).apply(
                lambda url: pulumi.Output.secret(url) if url and "?" in url else url
            ),
            "target_container": args.target_container,
            "target_prefix": args.target_prefix,
            "include": list(args.include),
            "exclude": list(args.exclude),
            "sync_round": args.sync_round,
            "strict": args.strict,
            "workers": args.workers,
            # Neither is a round input: changing them updates the stored inputs without copying.
            "deadline_seconds": float(args.deadline_minutes) * 60,
            "progress_interval": float(args.progress_seconds),
            # Progress messages name the copy resource, whose URN the dynamic host does not pass on.
            "resource_urn": _copy_urn(name, opts),
        }
        if args.freeze_marker is not None:
            props["freeze_marker"] = args.freeze_marker
        for key in SECRET_INPUTS:
            value = getattr(args, key)
            if value is not None:
                props[key] = pulumi.Output.secret(value)
        # Children do not inherit the component's depends_on or custom_timeouts: the copy itself must
        # wait for the role assignments that let it write, and its timeouts must outlast its deadline.
        margin = f"{int(float(args.deadline_minutes)) + TIMEOUT_MARGIN_MINUTES}m"
        timeouts = (opts.custom_timeouts if opts and opts.custom_timeouts
                    else pulumi.CustomTimeouts(create=margin, update=margin))
        run = _MigrationRun(
            f"{name}-copy",
            props,
            pulumi.ResourceOptions(
                parent=self,
                depends_on=(opts.depends_on if opts else None),
                additional_secret_outputs=list(SECRET_INPUTS),
                custom_timeouts=timeouts,
            ),
        )
        self.objects_copied = run.objects_copied
        self.bytes_copied = run.bytes_copied
        self.objects_skipped = run.objects_skipped
        self.bytes_skipped = run.bytes_skipped
        self.objects_failed = run.objects_failed
        self.verified = run.verified
        self.manifest_digest = run.manifest_digest
        self.completed_at = run.completed_at
        self.register_outputs(
            {
                "objects_copied": self.objects_copied,
                "bytes_copied": self.bytes_copied,
                "objects_skipped": self.objects_skipped,
                "bytes_skipped": self.bytes_skipped,
                "objects_failed": self.objects_failed,
                "verified": self.verified,
                "manifest_digest": self.manifest_digest,
                "completed_at": self.completed_at,
            }
        )
