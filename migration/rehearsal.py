"""``spotshift rehearse``: the whole GCP → Azure migration, end to end, on local emulators.

Every moving part of spotshift runs for real except the cloud provisioning:
fake-gcs-server and Azurite stand in for the two clouds, the API and workers
run as the same ``spotshift api`` / ``spotshift worker`` processes the VMs run,
jobs go in through HTTP, and the data moves through the exact code path the
``ObjectMigration`` resource runs in ``pulumi up`` (its provider's create and
update). The phases mirror the runbook: GCP phase → sync rounds while traffic
continues → freeze and strict cutover → Azure phase.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.storage.emulators import (
    Azurite,
    EmulatorError,
    FakeGcsServer,
    environment,
    free_port,
    silently_alter_blob,
)

SOURCE_BUCKET = "spotshift-source"
TARGET_CONTAINER = "spotshift-target"
INJECTIONS = ("none", "tamper")
#: A queued job is three objects: its input, its job document and its queue marker.
OBJECTS_PER_QUEUED_JOB = 3


class RehearsalError(Exception):
    """A rehearsal step could not run (as opposed to a check that ran and failed)."""


@dataclass
class Phase:
    """One phase's timing and outcome."""

    name: str
    started: float
    ended: float = 0.0
    ok: bool = False
    detail: str = ""

    @property
    def seconds(self) -> float:
        """Wall-clock duration."""
        return max(0.0, self.ended - self.started)


@dataclass
class Check:
    """One pass/fail assertion the rehearsal makes."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class RehearsalReport:
    """Everything the rehearsal measured; written as JSON and HTML."""

    jobs_requested: int
    started_at: float = field(default_factory=time.time)
    phases: list[Phase] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def passed(self) -> bool:
        """True only if every phase completed and every check passed."""
        return not self.error and all(p.ok for p in self.phases) and all(c.ok for c in self.checks) and bool(
            self.checks
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "passed": self.passed,
            "error": self.error,
            "jobs_requested": self.jobs_requested,
            "started_at": self.started_at,
            "duration_seconds": round(sum(p.seconds for p in self.phases), 3),
            "phases": [
                {**asdict(p), "seconds": round(p.seconds, 3), "offset": round(p.started - self.started_at, 3)}
                for p in self.phases
            ],
            "checks": [asdict(c) for c in self.checks],
            "rounds": self.rounds,
            "jobs": self.jobs,
            "digests": self.digests,
        }


# -- processes and HTTP ---------------------------------------------------------------


class _Service:
    """A ``spotshift`` subprocess (api or worker) with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-c", "from app.cli import main; main()", *args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the worker drains), then SIGKILL if it outlives ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of its output, for error messages."""
        if not self.log_path.exists():
            return ""
        return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])


class _Api:
    """A running ``spotshift api`` and a tiny HTTP client for it."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.service = _Service(name, ["api", "--host", "127.0.0.1", "--port", str(self.port)], env, log_dir)

    def wait_ready(self, timeout: float = 30.0) -> "_Api":
        """Block until ``/readyz`` answers 200; ``RehearsalError`` if the process dies or times out."""
        name = self.name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.service.alive():
                raise RehearsalError(f"{name} exited during start-up: {self.service.log_tail()}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/readyz")[0] == 200:
                    return self
            time.sleep(0.2)
        raise RehearsalError(f"{name} was not ready within {timeout:.0f}s: {self.service.log_tail()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the API on loopback; returns status, headers, body."""
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def submit(self, filename: str, data: bytes, content_type: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """POST /jobs with a multipart ``file`` field."""
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, headers, payload = self.request(
            "POST", "/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = {}
        return status, parsed, headers

    def job(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """GET /jobs/{id}."""
        status, _, payload = self.request("GET", f"/jobs/{job_id}")
        return status, (json.loads(payload) if status == 200 else {})

    def result(self, job_id: str) -> tuple[int, bytes]:
        """GET /jobs/{id}/result."""
        status, _, payload = self.request("GET", f"/jobs/{job_id}/result")
        return status, payload

    def stop(self) -> None:
        """Stop the API process."""
        self.service.stop(timeout=15)


def _image(index: int, rng: random.Random) -> tuple[str, bytes, str]:
    """A generated colour image, PNG or JPEG, a few KiB to a few tens of KiB."""
    from PIL import Image, ImageDraw

    width, height = rng.randint(64, 320), rng.randint(64, 320)
    image = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        draw.rectangle([x0, y0, x0 + rng.randint(5, 80), y0 + rng.randint(5, 80)],
                       fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    buffer = io.BytesIO()
    if index % 2:
        image.save(buffer, "JPEG", quality=85)
        return f"photo-{index:04d}.jpg", buffer.getvalue(), "image/jpeg"
    image.save(buffer, "PNG")
    return f"drawing-{index:04d}.png", buffer.getvalue(), "image/png"


# -- the rehearsal ----------------------------------------------------------------------


class Rehearsal:
    """Runs the phases in order and fills a ``RehearsalReport``.

    Args:
        jobs: images submitted on the GCP side before the first sync.
        workers: worker processes per cloud.
        queued: how many of those jobs are left queued (no worker running) for Azure to finish.
        inject: ``tamper`` corrupts one migrated object silently before cutover, to prove the strict
            cutover catches it (the rehearsal must then fail).
        log_dir: where service logs go.
        say: progress callback (one line per step).
    """

    def __init__(self, *, jobs: int = 50, workers: int = 2, queued: int | None = None, inject: str = "none",
                 log_dir: Path, say: Callable[[str], None] = print, gcs_port: int | None = None,
                 azurite_port: int | None = None, seed: int = 7) -> None:
        if jobs < 2:
            raise ValueError("--jobs must be at least 2 (some finish on GCP, some are left for Azure)")
        if inject not in INJECTIONS:
            raise ValueError(f"--inject must be one of {', '.join(INJECTIONS)}")
        self.jobs = jobs
        self.workers = workers
        self.queued = queued if queued is not None else max(1, jobs // 5)
        if not 0 < self.queued < jobs:
            raise ValueError("--queued must be between 1 and jobs-1")
        self.inject = inject
        self.log_dir = log_dir
        self.say = say
        self.gcs_port = gcs_port
        self.azurite_port = azurite_port
        self.rng = random.Random(seed)
        self.report = RehearsalReport(jobs_requested=jobs)
        self.submitted: dict[str, str] = {}  # job id -> filename
        self.gcp_results: dict[str, str] = {}  # job id -> sha256 of the result served on GCP
        self._stack = contextlib.ExitStack()

    # -- helpers --

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[Phase]:
        phase = Phase(name, time.time())
        self.report.phases.append(phase)
        self.say(f"[{name}] started")
        try:
            yield phase
            phase.ok = True
        except Exception as err:
            phase.detail = phase.detail or str(err)
            raise
        finally:
            phase.ended = time.time()
            self.say(f"[{name}] {'done' if phase.ok else 'FAILED'} in {phase.seconds:.1f}s"
                     + (f": {phase.detail}" if phase.detail else ""))

    def _check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.report.checks.append(Check(name, bool(ok), detail))
        self.say(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""))
        return bool(ok)

    def _submit(self, api: _Api, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            filename, data, content_type = _image(len(self.submitted), self.rng)
            status, payload, _ = api.submit(filename, data, content_type)
            if status != 202 or "id" not in payload:
                raise RehearsalError(f"upload of {filename} answered HTTP {status}: {payload}")
            self.submitted[payload["id"]] = filename
            ids.append(payload["id"])
        return ids

    def _wait_done(self, api: _Api, ids: list[str], timeout: float, services: list[_Service]) -> dict[str, str]:
        """Poll job states until every id is done or failed; returns id -> status."""
        states: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job_id in ids:
                if states.get(job_id) in ("done", "failed"):
                    continue
                status, job = api.job(job_id)
                states[job_id] = job.get("status", f"http-{status}")
            if all(states.get(i) in ("done", "failed") for i in ids):
                return states
            dead = [s.name for s in services if not s.alive()]
            if dead:
                raise RehearsalError(f"{', '.join(dead)} exited: {services[0].log_tail()}")
            time.sleep(0.3)
        pending = sum(1 for i in ids if states.get(i) not in ("done", "failed"))
        raise RehearsalError(f"{pending} job(s) not finished within {timeout:.0f}s")

    def _provider_props(self, sync_round: int, strict: bool) -> dict[str, Any]:
        from migration.resource import DEFAULT_EXCLUDE

        return {
            "source_bucket": SOURCE_BUCKET,
            "source_prefix": "",
            "gcs_project": self.gcs.project,
            "target_account_url": None,
            "target_container": TARGET_CONTAINER,
            "target_prefix": "",
            "include": [],
            "exclude": list(DEFAULT_EXCLUDE),
            "sync_round": sync_round,
            "strict": strict,
            "workers": None,
            "azure_connection_string": self.azurite.connection_string,
        }

    def _record_round(self, number: int, outs: dict[str, Any], seconds: float) -> None:
        row = {
            "round": number,
            "objects_copied": outs["objects_copied"],
            "bytes_copied": outs["bytes_copied"],
            "objects_skipped": outs["objects_skipped"],
            "objects_failed": outs["objects_failed"],
            "verified": outs["verified"],
            "manifest_digest": outs["manifest_digest"],
            "seconds": round(seconds, 3),
        }
        self.report.rounds.append(row)
        self.say(f"  round {number}: copied {row['objects_copied']} objects ({row['bytes_copied']} bytes), "
                 f"skipped {row['objects_skipped']}, failed {row['objects_failed']}, verified {row['verified']}")

    # -- phases --

    def run(self) -> RehearsalReport:
        """Run every phase; stop everything it started, whatever happens."""
        try:
            with self._stack:
                self._emulators()
                self._gcp_phase()
                self._sync_phase()
                self._cutover_phase()
                self._azure_phase()
        except (RehearsalError, EmulatorError) as err:
            self.report.error = str(err)
        except KeyboardInterrupt:
            self.report.error = "interrupted (Ctrl-C); everything started was stopped"
        except Exception as err:  # a failed step must still produce a report
            self.report.error = f"{type(err).__name__}: {err}"
        return self.report

    def _emulators(self) -> None:
        with self._phase("emulators"):
            self.gcs = self._stack.enter_context(FakeGcsServer(self.gcs_port))
            self.azurite = self._stack.enter_context(Azurite(self.azurite_port))
            self.gcs.create_bucket(SOURCE_BUCKET)
            self.azurite.create_container(TARGET_CONTAINER)
            # The provider runs in this process, as it runs in the Pulumi engine's: it finds the GCS
            # emulator the way it would find Application Default Credentials, through the environment.
            self._stack.enter_context(environment(self.gcs.env))
            base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GCS_", "STORAGE_"))}
            base.update({"LEASE_SECONDS": "15", "WORKER_POLL_SECONDS": "0.3", "WORKER_GRACE_SECONDS": "10",
                         "LOG_LEVEL": "INFO"})
            self.gcp_env = {**base, **self.gcs.env, "STORAGE_BACKEND": "gcp", "GCS_BUCKET": SOURCE_BUCKET}
            self.azure_env = {**base, **self.azurite.env, "STORAGE_BACKEND": "azure",
                              "AZURE_CONTAINER": TARGET_CONTAINER}
            self.say(f"  fake-gcs-server {self.gcs.url} bucket {SOURCE_BUCKET}; "
                     f"Azurite {self.azurite.blob_endpoint} container {TARGET_CONTAINER}")

    def _start_api(self, name: str, env: dict[str, str]) -> _Api:
        api = _Api(name, env, self.log_dir)
        self._stack.callback(api.stop)
        return api.wait_ready()

    def _start_workers(self, side: str, env: dict[str, str]) -> list[_Service]:
        workers = []
        for n in range(self.workers):
            service = _Service(f"{side}-worker-{n + 1}", ["worker"], {**env, "WORKER_ID": f"{side}-worker-{n + 1}"},
                               self.log_dir)
            self._stack.callback(service.stop)
            workers.append(service)
        return workers

    def _gcp_phase(self) -> None:
        with self._phase("gcp"):
            self.gcp_api = self._start_api("gcp-api", self.gcp_env)
            workers = self._start_workers("gcp", self.gcp_env)
            finished = self._submit(self.gcp_api, self.jobs - self.queued)
            states = self._wait_done(self.gcp_api, finished, timeout=120 + 2 * self.jobs,
                                     services=[self.gcp_api.service, *workers])
            for service in workers:
                code = service.stop()
                self._check(f"{service.name} drained on SIGTERM", code == 0, f"exit code {code}")
            self.left_queued = self._submit(self.gcp_api, self.queued)
            done = [i for i, s in states.items() if s == "done"]
            for job_id in done:
                status, body = self.gcp_api.result(job_id)
                if status == 200:
                    self.gcp_results[job_id] = hashlib.sha256(body).hexdigest()
            self.report.jobs.update(submitted_gcp=len(self.submitted), done_on_gcp=len(done),
                                    queued_on_gcp=len(self.left_queued))
            self._check("jobs finished on GCP", len(done) == len(finished), f"{len(done)}/{len(finished)} done")

    def _sync_phase(self) -> None:
        from migration.resource import MigrationProvider

        provider = MigrationProvider()
        with self._phase("sync"):
            # Traffic continues on GCP while round 1 copies.
            during: list[str] = []
            errors: list[BaseException] = []

            def traffic() -> None:
                try:
                    during.extend(self._submit(self.gcp_api, max(1, self.jobs // 10)))
                except BaseException as err:  # reported after the round
                    errors.append(err)

            thread = threading.Thread(target=traffic, name="gcp-traffic")
            started = time.time()
            thread.start()
            created = provider.create(self._provider_props(1, strict=False))
            thread.join()
            if errors:
                raise RehearsalError(f"uploads during sync failed: {errors[0]}")
            self.resource_id = created.id
            self._record_round(1, created.outs, time.time() - started)
            # More uploads between the rounds: round 2 must copy those (input, job, queue marker each)
            # and skip everything round 1 copied.
            between = self._submit(self.gcp_api, max(1, self.jobs // 10))
            self.left_queued += during + between
            self.report.jobs["submitted_during_sync"] = len(during) + len(between)

            started = time.time()
            olds = created.outs
            news = self._provider_props(2, strict=False)
            if not provider.diff(self.resource_id, olds, news).changes:
                raise RehearsalError("bumping sync_round did not ask for a new copy round")
            updated = provider.update(self.resource_id, olds, news)
            self._record_round(2, updated.outs, time.time() - started)
            self.last_outs = updated.outs
            first, second = self.report.rounds[0], self.report.rounds[1]
            # Uploads during round 1 may have landed before or after its listing; those between the
            # rounds are certainly new.
            low, high = OBJECTS_PER_QUEUED_JOB * len(between), OBJECTS_PER_QUEUED_JOB * (len(between) + len(during))
            self._check("round 2 copies only what changed",
                        low <= second["objects_copied"] <= high
                        and second["objects_skipped"] >= first["objects_copied"],
                        f"round 1 copied {first['objects_copied']}; round 2 copied {second['objects_copied']} "
                        f"(expected {low}-{high}) and skipped {second['objects_skipped']}")

    def _tamper(self) -> None:
        """Silently corrupt one migrated result: same size, same metadata and Content-MD5, different bytes."""
        from azure.storage.blob import ContainerClient

        with ContainerClient.from_connection_string(self.azurite.connection_string, TARGET_CONTAINER) as container:
            victim = next(iter(container.list_blob_names(name_starts_with="results/")))
        silently_alter_blob(self.azurite.connection_string, TARGET_CONTAINER, victim)
        self.say(f"  injected: silently altered az://{TARGET_CONTAINER}/{victim}")

    def _cutover_phase(self) -> None:
        from migration import copier
        from migration.resource import MigrationProvider

        provider = MigrationProvider()
        with self._phase("cutover"):
            self.gcp_api.stop()
            self.gcp_api = self._start_api("gcp-api-frozen", {**self.gcp_env, "READ_ONLY": "true"})
            filename, data, content_type = _image(9999, self.rng)
            status, _, headers = self.gcp_api.submit(filename, data, content_type)
            retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
            self._check("frozen GCP API refuses writes", status == 503 and retry_after is not None,
                        f"HTTP {status}, Retry-After {retry_after}")
            some_id = next(iter(self.submitted))
            self._check("frozen GCP API still serves reads", self.gcp_api.job(some_id)[0] == 200)
            if self.inject == "tamper":
                self._tamper()
            started = time.time()
            try:
                final = provider.update(self.resource_id, self.last_outs, self._provider_props(3, strict=True))
            except Exception as err:
                self._check("strict final sync", False, str(err))
                raise RehearsalError(f"cutover refused: {err}") from err
            self._record_round(3, final.outs, time.time() - started)
            self._check("strict final sync verified every object", final.outs["verified"] is True)
            from app.storage.factory import build_store

            with build_store("gcp", gcs_bucket=SOURCE_BUCKET, gcs_project=self.gcs.project) as source, \
                    build_store("azure", azure_container=TARGET_CONTAINER,
                                azure_connection_string=self.azurite.connection_string) as target:
                exclude = final.outs["exclude"]
                self.report.digests = {
                    "source": copier.manifest_digest(source, "", exclude=exclude),
                    "target": copier.manifest_digest(target, "", exclude=exclude),
                }
            self._check("manifest digests match", self.report.digests["source"] == self.report.digests["target"],
                        self.report.digests["source"][:16])

    def _azure_phase(self) -> None:
        with self._phase("azure"):
            api = self._start_api("azure-api", self.azure_env)
            visible = sum(1 for job_id in self.submitted if api.job(job_id)[0] == 200)
            self.report.jobs["migrated"] = visible
            self._check("every GCP job is visible through the Azure API", visible == len(self.submitted),
                        f"{visible}/{len(self.submitted)}")
            same = sum(1 for job_id, digest in self.gcp_results.items()
                       if hashlib.sha256(api.result(job_id)[1]).hexdigest() == digest)
            self._check("finished jobs serve the same result bytes on Azure", same == len(self.gcp_results),
                        f"{same}/{len(self.gcp_results)}")
            workers = self._start_workers("azure", self.azure_env)
            fresh = self._submit(api, 3)
            states = self._wait_done(api, self.left_queued + fresh, timeout=120 + 2 * self.jobs,
                                     services=[api.service, *workers])
            finished_queued = sum(1 for i in self.left_queued if states[i] == "done")
            finished_fresh = sum(1 for i in fresh if states[i] == "done")
            self.report.jobs.update(finished_on_azure=finished_queued, new_on_azure=finished_fresh)
            self._check("jobs queued on GCP were processed on Azure", finished_queued == len(self.left_queued),
                        f"{finished_queued}/{len(self.left_queued)}")
            self._check("new uploads work on Azure", finished_fresh == len(fresh), f"{finished_fresh}/{len(fresh)}")


# -- output ------------------------------------------------------------------------------


def render_summary(report: RehearsalReport, console: Any) -> None:
    """Print the phases, jobs, rounds, digests and verdict as rich tables."""
    from rich.table import Table

    phases = Table(title="Phases")
    for column in ("phase", "seconds", "result"):
        phases.add_column(column)
    for p in report.phases:
        phases.add_row(p.name, f"{p.seconds:.1f}", "ok" if p.ok else f"FAILED {p.detail}")
    console.print(phases)
    rounds = Table(title="Copy rounds")
    for column in ("round", "copied", "bytes copied", "skipped", "failed", "verified", "seconds"):
        rounds.add_column(column)
    for r in report.rounds:
        rounds.add_row(str(r["round"]), str(r["objects_copied"]), str(r["bytes_copied"]), str(r["objects_skipped"]),
                       str(r["objects_failed"]), str(r["verified"]), f"{r['seconds']:.2f}")
    console.print(rounds)
    jobs = Table(title="Jobs")
    jobs.add_column("what")
    jobs.add_column("count")
    for key, value in report.jobs.items():
        jobs.add_row(key.replace("_", " "), str(value))
    console.print(jobs)
    for name, digest in report.digests.items():
        console.print(f"manifest digest {name}: {digest}")
    failed = [c for c in report.checks if not c.ok]
    for check in failed:
        console.print(f"[red]check failed:[/red] {check.name} {check.detail}")
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")
    console.print("[bold green]REHEARSAL PASSED[/bold green]" if report.passed else "[bold red]REHEARSAL FAILED[/bold red]")


def write_html(report: RehearsalReport, path: Path) -> None:
    """A self-contained HTML page: numbers plus an inline SVG timeline."""
    from html import escape

    data = report.to_dict()
    total = max(0.001, max((p["offset"] + p["seconds"] for p in data["phases"]), default=0.001))
    bars = []
    for row, phase in enumerate(data["phases"]):
        x = 120 + 560 * phase["offset"] / total
        width = max(2.0, 560 * phase["seconds"] / total)
        colour = "#2e7d32" if phase["ok"] else "#c62828"
        y = 10 + row * 28
        bars.append(
            f'<text x="5" y="{y + 15}">{escape(phase["name"])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="20" fill="{colour}"/>'
            f'<text x="{x + width + 4:.1f}" y="{y + 15}">{phase["seconds"]:.1f}s</text>'
        )
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{20 + 28 * len(bars)}" '
           f'font-family="sans-serif" font-size="13">{"".join(bars)}</svg>')

    def table(headers: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    verdict = "PASSED" if data["passed"] else "FAILED"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spotshift rehearsal: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}.passed{{color:#2e7d32}}.failed{{color:#c62828}}</style>
</head><body>
<h1>spotshift rehearsal: <span class="{verdict.lower()}">{verdict}</span></h1>
<p>GCP (fake-gcs-server) → Azure (Azurite), {data['jobs_requested']} jobs, {data['duration_seconds']:.1f}s.
{escape(data['error'])}</p>
<h2>Timeline</h2>{svg}
<h2>Checks</h2>{table(["check", "result", "detail"], [[c["name"], "ok" if c["ok"] else "FAILED", c["detail"]] for c in data["checks"]])}
<h2>Copy rounds</h2>{table(["round", "copied", "bytes copied", "skipped", "failed", "verified", "seconds"],
    [[r["round"], r["objects_copied"], r["bytes_copied"], r["objects_skipped"], r["objects_failed"], r["verified"], r["seconds"]] for r in data["rounds"]])}
<h2>Jobs</h2>{table(["what", "count"], [[k.replace("_", " "), v] for k, v in data["jobs"].items()])}
<h2>Manifest digests</h2>{table(["side", "sha256"], [[k, v] for k, v in data["digests"].items()])}
</body></html>
"""
    path.write_text(page)


def rehearse(*, jobs: int, workers: int, queued: int | None, inject: str, report_dir: Path,
             gcs_port: int | None, azurite_port: int | None) -> int:
    """Run the rehearsal, print the summary, write both reports; return the exit code."""
    from rich.console import Console

    console = Console(stderr=False)
    log_dir = report_dir / "rehearsal-logs"
    try:
        rehearsal = Rehearsal(jobs=jobs, workers=workers, queued=queued, inject=inject, log_dir=log_dir,
                              say=lambda line: console.print(line, highlight=False, markup=False),
                              gcs_port=gcs_port, azurite_port=azurite_port)
    except ValueError as err:
        Console(stderr=True).print(f"spotshift rehearse: {err}", markup=False, highlight=False)
        return 2
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        Console(stderr=True).print(f"spotshift rehearse: cannot write to --report-dir {report_dir}: {err}",
                                   markup=False, highlight=False)
        return 2
    report = rehearsal.run()
    render_summary(report, console)
    (report_dir / "rehearsal-report.json").write_text(json.dumps(report.to_dict(), indent=2))
    write_html(report, report_dir / "rehearsal-report.html")
    console.print(f"reports: {report_dir / 'rehearsal-report.json'}, {report_dir / 'rehearsal-report.html'}; "
                  f"service logs in {log_dir}", markup=False)
    return 0 if report.passed else 1

