"""``spotshift demo``: the whole workload on one machine, on the local backend.

Starts the API and a worker as subprocesses sharing a local store directory,
uploads a few generated images over HTTP, waits for the results and prints
where the grayscale files are. Both subprocesses are stopped on the way out,
also after Ctrl-C or an error.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import app
from app.queue import Queue

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

# Children run only the workload commands through ``cli()``: that needs neither
# the installed ``spotshift`` script nor the migration commands.
_CHILD = [sys.executable, "-c", "from app.cli import cli; cli()"]
# Loopback only: bypass any HTTP(S)_PROXY from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_images() -> list[tuple[str, bytes, str]]:
    """A few generated inputs: (file name, bytes, content type)."""
    from PIL import Image, ImageDraw

    def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        return out.getvalue()

    size = (320, 200)
    gradient = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(size),
            Image.linear_gradient("L").rotate(90).resize(size),
            Image.radial_gradient("L").resize(size),
        ),
    )
    shapes = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((20, 20, 140, 140), fill="red")
    draw.rectangle((110, 90, 236, 236), fill="navy")
    draw.polygon([(30, 230), (90, 150), (150, 230)], fill="gold")
    badge = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    ImageDraw.Draw(badge).ellipse((8, 8, 120, 120), fill=(0, 160, 80, 200))
    portrait = Image.new("RGB", (240, 160), "orange")
    ImageDraw.Draw(portrait).rectangle((0, 0, 60, 160), fill="purple")
    exif = portrait.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise when displayed
    return [
        ("gradient.png", encode(gradient, "PNG"), "image/png"),
        ("shapes.jpg", encode(shapes, "JPEG", quality=90), "image/jpeg"),
        ("badge.png", encode(badge, "PNG"), "image/png"),
        ("portrait-exif.jpg", encode(portrait, "JPEG", exif=exif), "image/jpeg"),
    ]


def post_file(url: str, filename: str, data: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """POST one file as multipart field ``file``; return (status, JSON body)."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    return _call(request)


def _call(request: urllib.request.Request | str) -> tuple[int, dict[str, Any]]:
    try:
        with _http.open(request, timeout=10) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _json(exc.read())


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"detail": body.decode("utf-8", "replace")[:200]}


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*_CHILD, *args], env=env, stdin=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, api: subprocess.Popen[bytes], deadline: float) -> int | None:
    """None once /readyz answers 200; else the API's exit code, or EXIT_FAILED on timeout."""
    while time.monotonic() < deadline:
        if api.poll() is not None:
            return api.returncode or EXIT_FAILED
        try:
            if _call(f"{base}/readyz")[0] == 200:
                return None
        except (OSError, ValueError):
            pass  # not listening yet
        time.sleep(0.1)
    return EXIT_FAILED


def _wait_jobs(base: str, ids: list[str], worker: subprocess.Popen[bytes], deadline: float) -> dict[str, dict]:
    jobs: dict[str, dict] = {}
    while time.monotonic() < deadline and worker.poll() is None:
        jobs = {job_id: _call(f"{base}/jobs/{job_id}")[1] for job_id in ids}
        if all(job.get("status") in ("done", "failed") for job in jobs.values()):
            break
        time.sleep(0.2)
    return jobs


def run_demo(store_dir: Path | None = None, *, timeout: float = 60.0) -> int:
    """Run the local demo and return the exit code: 0 all done, 1 a job failed, 2 configuration error."""
    root = Path(tempfile.mkdtemp(prefix="spotshift-demo-")) if store_dir is None else store_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    project_root = str(Path(app.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")])),
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_PATH": str(root),
        "READ_ONLY": "false",
        "EVICTION_WATCH": "off",
        "WORKER_ID": "demo-worker",
        "WORKER_POLL_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    processes: list[subprocess.Popen[bytes]] = []
    print(f"spotshift demo: store {root}, API {base}")
    try:
        processes.append(_start(["api", "--host", "127.0.0.1", "--port", str(port)], env))
        failed_start = _wait_ready(base, processes[0], deadline)
        if failed_start is not None:
            print("spotshift demo: the API did not start", file=sys.stderr)
            return failed_start
        worker = _start(["worker"], env)
        processes.append(worker)

        ids = []
        for filename, data, content_type in sample_images():
            status, body = post_file(f"{base}/jobs", filename, data, content_type)
            print(f"  uploaded {filename:<18} -> {status} {body.get('id', body.get('detail'))}")
            if status == 202:
                ids.append(body["id"])
        status, body = post_file(f"{base}/jobs", "notes.png", b"plain text, not a PNG", "image/png")
        print(f"  uploaded {'notes.png':<18} -> {status} {body.get('detail')} (rejected, as it should be)")

        jobs = _wait_jobs(base, ids, worker, deadline)
        ok = len(jobs) == len(ids) and all(job.get("status") == "done" for job in jobs.values())
        print("results:")
        for job_id in ids:
            job = jobs.get(job_id, {})
            where = root / Queue.result_key(job_id) if job.get("status") == "done" else job.get("error") or ""
            print(f"  {job.get('filename', job_id):<18} {job.get('status', 'unknown'):<10} {where}")
        if worker.poll() is not None:
            print(f"spotshift demo: the worker exited with code {worker.returncode}", file=sys.stderr)
            return EXIT_CONFIG if worker.returncode == EXIT_CONFIG else EXIT_FAILED
        return EXIT_OK if ok else EXIT_FAILED
    except KeyboardInterrupt:
        print("spotshift demo: interrupted, stopping", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"spotshift demo: lost contact with the API: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _stop(processes)
