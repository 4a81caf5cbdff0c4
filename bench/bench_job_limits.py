"""Per-job limits, measured: what JOB_TIMEOUT_SECONDS does to a stalled decoder, and what a 40 MP image costs.

Run with ``.venv/bin/python bench/bench_job_limits.py`` (not part of ``make test``).

1. Stalled decoder: a worker on a LocalStore gets a job whose transform hangs
   forever with SIGTERM/SIGINT blocked (like a decoder stuck in C), then a
   normal job. Printed: when the stalled child was killed and the job requeued,
   when it ended failed, that the next job was done, and the worker's own RSS.
2. Memory: a 40-megapixel JPEG and PNG (the default MAX_IMAGE_PIXELS) are
   converted (a) in the calling process, the way the worker did before, and
   (b) in the job's child process; printed are the peak RSS of each, and the
   smallest JOB_MEMORY_MB (in 64 MiB steps) under which each image still converts.
Nothing here is a pass/fail test.
"""

from __future__ import annotations

import functools
import io
import logging
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.imaging import grayscale_png  # noqa: E402
from app.imaging_sandbox import MIB, ChildTransform, JobOutOfMemory  # noqa: E402
from app.queue import Queue  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage import LocalStore  # noqa: E402
from app.worker import Worker  # noqa: E402

STALL = b"STALL"
PIXELS = 40_000_000
SIZE = (7300, 5479)  # 39.997 MP


def stall_or_grayscale(data: bytes) -> bytes:
    """Hang forever, deaf to SIGTERM/SIGINT, on ``STALL`` input; else the real transform."""
    if data.startswith(STALL):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        threading.Event().wait()
    return grayscale_png(data, PIXELS)


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


def photo_like(fmt: str) -> bytes:
    """A 40 MP image with smooth, photo-like content (upscaled noise), encoded as ``fmt``."""
    small = Image.merge("RGB", [Image.effect_noise((SIZE[0] // 20, SIZE[1] // 20), 80) for _ in range(3)])
    big = small.resize(SIZE, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 6}))
    return out.getvalue()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stalled_decoder(timeout: float) -> None:
    print(f"== stalled decoder, JOB_TIMEOUT_SECONDS={timeout:g}, MAX_ATTEMPTS=2")
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(root)
        settings = Settings(LOCAL_STORAGE_PATH=root, WORKER_ID="bench", WORKER_POLL_SECONDS=0.05, MAX_ATTEMPTS=2)
        queue = Queue.from_settings(store, settings)
        stalled = queue.submit(STALL + small_png(), "stall.png", "image/png")
        good = queue.submit(small_png(), "good.png", "image/png")
        transform = ChildTransform(stall_or_grayscale, timeout=timeout)
        worker = Worker(store, settings, process=transform)
        events: list[tuple[float, str]] = []
        start = time.monotonic()

        def watch() -> None:
            last = None
            while not finished.is_set():
                job = queue.get(stalled["id"])
                state = (job["status"], job.get("attempts"))
                if state != last:
                    events.append((time.monotonic() - start, f"stalled job {state[0]}, attempts {state[1]}"))
                    last = state
                finished.wait(0.01)

        finished = threading.Event()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        worker.run(until_empty=True)
        elapsed = time.monotonic() - start
        finished.set()
        watcher.join()
        for at, what in events:
            print(f"  t={at:6.2f}s  {what}")
        job = queue.get(stalled["id"])
        print(f"  stalled job: {job['status']} after {job['attempts']} attempts: {job['error']}")
        print(f"  exit code of the last child stopped: {transform.last_exitcode} (-9: SIGKILL at the limit)")
        print(f"  next job: {queue.get(good['id'])['status']}; worker done={worker.done} failed={worker.failed}")
        print(f"  whole burst {elapsed:.2f}s (2 attempts x {timeout:g}s + 1 normal job); "
              f"worker peak RSS {rss_mib():.0f} MiB")


def in_process_peak(data: bytes) -> float:
    """Peak RSS (MiB) of a fresh interpreter that converts ``data`` in-process, as the worker did before."""
    code = (
        "import resource, sys; from app.imaging import grayscale_png;"
        f"grayscale_png(sys.stdin.buffer.read(), {PIXELS});"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, check=True, cwd=root)
    return float(done.stdout)


def child_peak(data: bytes, memory_mb: int | None) -> float | None:
    """Peak RSS (MiB) of a fresh job child converting ``data`` under ``memory_mb``; None if over the cap."""
    fn = functools.partial(grayscale_png, max_pixels=PIXELS)
    transform = ChildTransform(fn, timeout=300, memory_bytes=memory_mb * MIB if memory_mb else None)
    try:
        transform(data)
    except JobOutOfMemory:
        return None
    finally:
        transform.close()
    assert transform.last_peak_rss is not None
    return transform.last_peak_rss / MIB


def memory() -> None:
    print(f"== memory for a {SIZE[0]}x{SIZE[1]} ({SIZE[0] * SIZE[1] / 1e6:.1f} MP) image")
    for fmt in ("JPEG", "PNG"):
        data = photo_like(fmt)
        before = in_process_peak(data)
        child = child_peak(data, None)
        smallest = next((mb for mb in range(128, 2049, 64) if child_peak(data, mb) is not None), None)
        print(
            f"  {fmt:4} {len(data) / MIB:5.1f} MiB file: in-process peak RSS {before:.0f} MiB; "
            f"job child peak RSS {child:.0f} MiB; smallest JOB_MEMORY_MB that converts it: {smallest}"
        )


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  log %(levelname)s %(name)s: %(message)s")
    stalled_decoder(2.0)
    memory()


if __name__ == "__main__":
    main()
