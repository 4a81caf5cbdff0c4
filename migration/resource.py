"""The ``ObjectMigration`` component and the thin dynamic provider that runs the copier.

The provider is pickled (dill, ``recurse=True``) into the stack's state and
unpickled later in a separate process, so it captures nothing but plain
values: every method imports what it needs and builds its stores *inside*
the call. Credentials come from the operator's environment (Application
Default Credentials for GCS, ``DefaultAzureCredential`` for the account URL)
or from inputs passed as Pulumi secrets, which stay secret in the state.
``delete`` never deletes migrated data: destroying the resource only forgets it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic

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
)


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


def run_round(props: Mapping[str, Any]) -> dict[str, Any]:
    """One copy round: plan, copy, verify (re-reading every target byte when strict), digest."""
    from migration import copier

    strict = bool(props.get("strict"))
    selection = _selection(props)
    source = _source_store(props)
    target = _target_store(props)
    try:
        # sync verifies what it copied and, strict, re-lists and re-reads the whole
        # target: a separate verify would list and read everything once more.
        report = copier.sync(source, target, strict=strict,
                             workers=int(props.get("workers") or copier.DEFAULT_WORKERS), **selection)
        if props.get("freeze_marker"):
            _refuse_late_writes(source, str(props["freeze_marker"]), selection["source_prefix"], props)
        digest = _digest(target, selection)
    finally:
        source.close()
        target.close()
    return _outputs(report.to_dict(), digest, strict, props)


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
    }


def read_state(props: Mapping[str, Any]) -> dict[str, Any]:
    """Verify from listings and digest the target without copying anything."""
    from migration import copier

    selection = _selection(props)
    source = _source_store(props)
    target = _target_store(props)
    try:
        check = copier.verify(source, target, workers=int(props.get("workers") or copier.DEFAULT_WORKERS),
                              **selection).to_dict()
        digest = _digest(target, selection)
    finally:
        source.close()
        target.close()
    return {
        "verified": bool(check.get("verified")),
        "manifest_digest": digest,
        "failures": [f"{m['key']}: {m['reason']}" for m in check.get("mismatches", [])][:100],
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


class MigrationProvider(pulumi.dynamic.ResourceProvider):
    """Runs a copy round on create/update; never deletes data; reads without copying."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        """First round: copy everything, verify, digest."""
        try:
            results = run_round(props)
        except MigrationError:
            raise
        except Exception as err:
            raise MigrationError(f"copy {_where(props)} failed: {err}") from err
        return pulumi.dynamic.CreateResult(id_=_resource_id(props), outs={**props, **results})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        """A new round when the locations, filters, strictness or ``sync_round`` change."""
        changed = [key for key in ROUND_INPUTS if _norm(key, olds.get(key)) != _norm(key, news.get(key))]
        # A connection string is secret, but which account it names is not: a new account is a new round.
        if _target_account(olds) != _target_account(news):
            changed.append("target account")
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        """Another round: copies only what is new or changed."""
        try:
            results = run_round(news)
        except MigrationError:
            raise
        except Exception as err:
            raise MigrationError(f"copy {_where(news)} failed: {err}") from err
        return pulumi.dynamic.UpdateResult(outs={**news, **results})

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        """Current state (verified, digest) from listings, copying nothing."""
        try:
            state = read_state(props)
        except Exception as err:
            raise MigrationError(f"reading {_where(props)} failed: {err}") from err
        return pulumi.dynamic.ReadResult(id_=id_, outs={**props, **state})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Forget the resource; migrated objects stay where they are."""


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


class ObjectMigration(pulumi.ComponentResource):
    """Copies a GCS bucket into an Azure container during ``pulumi up``, verified and incremental."""

    objects_copied: pulumi.Output[int]
    bytes_copied: pulumi.Output[int]
    objects_skipped: pulumi.Output[int]
    objects_failed: pulumi.Output[int]
    verified: pulumi.Output[bool]
    manifest_digest: pulumi.Output[str]

    def __init__(self, name: str, args: ObjectMigrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spotshift:migration:ObjectMigration", name, None, opts)
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
        }
        if args.freeze_marker is not None:
            props["freeze_marker"] = args.freeze_marker
        for key in SECRET_INPUTS:
            value = getattr(args, key)
            if value is not None:
                props[key] = pulumi.Output.secret(value)
        # Children do not inherit the component's depends_on: the copy itself must wait for the
        # role assignments that let it write, so hand them down.
        run = _MigrationRun(
            f"{name}-copy",
            props,
            pulumi.ResourceOptions(
                parent=self,
                depends_on=(opts.depends_on if opts else None),
                additional_secret_outputs=list(SECRET_INPUTS),
            ),
        )
        self.objects_copied = run.objects_copied
        self.bytes_copied = run.bytes_copied
        self.objects_skipped = run.objects_skipped
        self.objects_failed = run.objects_failed
        self.verified = run.verified
        self.manifest_digest = run.manifest_digest
        self.register_outputs(
            {
                "objects_copied": self.objects_copied,
                "bytes_copied": self.bytes_copied,
                "objects_skipped": self.objects_skipped,
                "objects_failed": self.objects_failed,
                "verified": self.verified,
                "manifest_digest": self.manifest_digest,
            }
        )
