"""Migration benchmark: the spotshift engine against a seed-style loop and rclone, on the emulators.

Run with ``make bench`` (not part of ``make test``). Starts fake-gcs-server
and Azurite on 127.0.0.1, seeds a small set (2,000 objects of 4-64 KiB) and a
large set (16 objects of 32 MiB) into fake-gcs-server, then copies each set
into a fresh Azurite container with:

1. the spotshift engine (``spotshift migrate``, as a child process);
2. a seed-style loop (sequential, download each object whole, upload it, with the SDKs);
3. rclone (``--transfers 32``) against both emulators through a generated config;
4. the engine again with nothing changed (the no-op incremental run, timed as
   a whole ``spotshift migrate`` process including Python start-up).

Each is measured ``--runs`` times (default 3) and the medians printed, with
client CPU-seconds per 1,000 small objects (engine and rclone, from the child
process's own rusage via ``os.wait4``), the engine's peak RSS on the large
set, and the ratios last, one per line. Then the scale section
(``bench/scale.py``): 100k ``file://`` objects copied and re-run, a 1M-object
dry run and a 20k-object emulator no-op, engine against rclone, time and peak
RSS. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.storage.emulators import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, FakeGcsServer  # noqa: E402
from bench import scale  # noqa: E402

#: Where the engine's child processes import spotshift from (``--code-root``: another checkout).
CODE_ROOT = ROOT

MIB = 1024 * 1024
SMALL_COUNT = 2000
SMALL_MIN, SMALL_MAX = 4 * 1024, 64 * 1024
LARGE_COUNT = 16
LARGE_SIZE = 32 * MIB
SMALL_BUCKET = "bench-small"
LARGE_BUCKET = "bench-large"


@dataclass
class Sample:
    """One timed run."""

    seconds: float
    cpu: float = 0.0
    maxrss_kib: int = 0
    #: CPU seconds the emulator serving the run spent during it (0 when not measured).
    served_cpu: float = 0.0


@dataclass
class Series:
    """All runs of one method on one set."""

    objects: int
    nbytes: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def maxrss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds

    @property
    def mib_per_second(self) -> float:
        return self.nbytes / MIB / self.seconds


#: ``spotshift`` exactly as the console script runs it (``app.cli.main``), plus an exit hook
#: that records the process's own peak RSS (VmHWM). ``ru_maxrss`` from wait4 is not usable:
#: Linux charges a vfork'ed child with its parent's RSS high-water mark at exec time.
_SPOTSHIFT = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as status, open(os.environ["SPOTSHIFT_BENCH_PEAK"], "w") as out:
        out.write(next(l for l in status if l.startswith("VmHWM:")).split()[1])
atexit.register(_peak)
sys.argv[0] = "spotshift"
from app.cli import main
main()
"""


def spotshift_command() -> list[str]:
    """``spotshift`` as a child process (see ``_SPOTSHIFT``)."""
    return [sys.executable, "-c", _SPOTSHIFT]


def run_child(command: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[Sample, str]:
    """Run a child process; its wall time, CPU (user+sys, from wait4) and peak RSS (VmHWM, KiB)."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file, \
            tempfile.NamedTemporaryFile("r") as peak_file:
        env = {**env, "SPOTSHIFT_BENCH_PEAK": peak_file.name}
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out_file, stderr=err_file, cwd=cwd or CODE_ROOT)
        watcher = _PeakWatcher(proc.pid)
        # wait4, not wait: it returns this child's own rusage (CPU).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        watcher.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
        reported = peak_file.read().strip()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    peak = int(reported) if reported else watcher.peak_kib
    return Sample(seconds, usage.ru_utime + usage.ru_stime, peak), out.decode(errors="replace")


class _PeakWatcher:
    """Polls a child's VmHWM (for children that cannot report it themselves, like rclone)."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def seed(gcs: FakeGcsServer) -> tuple[tuple[int, int], tuple[int, int]]:
    """Create both buckets and fill them (in parallel, with the GCS backend)."""
    from app.storage.gcs import GcsStore

    rng = random.Random(20240611)
    gcs.create_bucket(SMALL_BUCKET)
    gcs.create_bucket(LARGE_BUCKET)
    small = [(f"images/{i // 100:03d}/img-{i:05d}.jpg", rng.randint(SMALL_MIN, SMALL_MAX)) for i in range(SMALL_COUNT)]
    large = [(f"archives/blob-{i:02d}.bin", LARGE_SIZE) for i in range(LARGE_COUNT)]
    with GcsStore(SMALL_BUCKET, project=gcs.project) as small_store, \
            GcsStore(LARGE_BUCKET, project=gcs.project) as large_store, \
            concurrent.futures.ThreadPoolExecutor(16) as pool:
        jobs = [pool.submit(small_store.put, key, os.urandom(size), content_type="image/jpeg",
                            metadata={"origin": "bench"}) for key, size in small]
        jobs += [pool.submit(large_store.put, key, _random_chunks(size), size=size,
                             content_type="application/octet-stream") for key, size in large]
        for job in jobs:
            job.result()
    return (len(small), sum(s for _, s in small)), (len(large), sum(s for _, s in large))


def _random_chunks(size: int, chunk: int = 4 * MIB):
    block = os.urandom(chunk)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        # Vary each chunk so objects are not identical.
        yield os.urandom(16) + piece[16:]
        sent += len(piece)


def new_container(azurite: Azurite) -> str:
    name = f"bench-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


def drop_container(azurite: Azurite, name: str) -> None:
    """Delete a container after its run: Azurite slows down as its blob count grows."""
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        service.delete_container(name)


def engine_run(bucket: str, container: str, env: dict[str, str], workers: int | None) -> tuple[Sample, dict]:
    command = [*spotshift_command(), "migrate", f"gs://{bucket}", f"az://{container}", "--json"]
    if workers:
        command += ["--workers", str(workers)]
    sample, out = run_child(command, env)
    return sample, json.loads(out)


def seed_loop(gcs: FakeGcsServer, azurite: Azurite, bucket: str, container: str) -> Sample:
    """What the seed project did: list, then for each object download it whole and upload it (no checks)."""
    from azure.storage.blob import BlobServiceClient
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    started = time.perf_counter()
    client = storage.Client(project=gcs.project, credentials=AnonymousCredentials())
    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        target = service.get_container_client(container)
        for blob in client.list_blobs(bucket):
            data = blob.download_as_bytes()
            target.upload_blob(blob.name, data, overwrite=True)
    client.close()
    return Sample(time.perf_counter() - started)


def rclone_config(gcs: FakeGcsServer, azurite: Azurite, directory: Path) -> Path:
    path = directory / "rclone.conf"
    path.write_text(
        "[gcs]\n"
        "type = google cloud storage\n"
        "anonymous = true\n"
        f"endpoint = {gcs.url}/storage/v1/\n"
        "\n"
        "[az]\n"
        "type = azureblob\n"
        "use_emulator = true\n"
        f"account = {AZURITE_ACCOUNT}\n"
        f"key = {AZURITE_KEY}\n"
        f"endpoint = {azurite.blob_endpoint}\n"
    )
    return path


def rclone_run(config: Path, bucket: str, container: str, env: dict[str, str]) -> Sample:
    command = ["/usr/bin/rclone", "--config", str(config), "copy", f"gcs:{bucket}", f"az:{container}",
               "--transfers", "32", "-q"]
    sample, _ = run_child(command, env)
    return sample


def print_table(title: str, rows: list[tuple[str, Series]]) -> None:
    print(f"\n{title}")
    print(f"  {'method':<28} {'median s':>9} {'obj/s':>9} {'MiB/s':>9} {'runs (s)':>26}")
    for name, series in rows:
        runs = ", ".join(f"{s.seconds:.2f}" for s in series.samples)
        print(f"  {name:<28} {series.seconds:>9.2f} {series.objects_per_second:>9.1f} "
              f"{series.mib_per_second:>9.1f} {runs:>26}")


def main() -> int:
    # `kill` (SIGTERM) must still stop the emulators through their context managers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per method (median printed)")
    parser.add_argument("--workers", type=int, default=None, help="engine --workers (default: the engine's)")
    parser.add_argument("--skip-seed-loop", action="store_true", help="skip the slow seed-style loop")
    parser.add_argument("--only", choices=("small", "large", "scale"), default=None, help="run one section only")
    parser.add_argument("--skip-scale", action="store_true", help="skip the scale section")
    parser.add_argument("--scale-local", type=int, default=100_000, help="objects of the file:// copy and no-op")
    parser.add_argument("--scale-dry", type=int, default=1_000_000, help="objects of the file:// dry run")
    parser.add_argument("--scale-emulator", type=int, default=20_000, help="objects of the emulator no-op")
    parser.add_argument("--scale-dir", type=Path, default=Path(tempfile.gettempdir()) / "spotshift-bench-scale",
                        help="where the local scale sets are kept between runs")
    parser.add_argument("--code-root", type=Path, default=None,
                        help="run the engine from this checkout (e.g. the code before a change)")
    parser.add_argument("--before-root", type=Path, default=None,
                        help="scale section: also run the engine from this checkout (dry run and emulator no-op)")
    args = parser.parse_args()
    global CODE_ROOT
    if args.code_root is not None:
        CODE_ROOT = args.code_root.resolve()
    if not Path("/usr/bin/rclone").exists() and shutil.which("rclone") is None:
        print("rclone not found: install it (apt-get install rclone) or run `make bench`", file=sys.stderr)
        return 2

    # An installed spotshift has its bytecode compiled (pip does it); a source checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would recompile app/ and migration/ in every child process.
    compileall.compile_dir(CODE_ROOT / "app", quiet=1)
    compileall.compile_dir(CODE_ROOT / "migration", quiet=1)
    with tempfile.TemporaryDirectory(prefix="spotshift-bench-") as tmp, \
            FakeGcsServer(log_level="warn") as gcs, Azurite() as azurite:
        env = {**os.environ, **gcs.env, **azurite.env}
        env.pop("AZURE_STORAGE_ACCOUNT_URL", None)
        os.environ.update(gcs.env)
        config = rclone_config(gcs, azurite, Path(tmp))
        sets = []
        if args.only != "scale":
            print(f"seeding fake-gcs-server ({SMALL_COUNT} x 4-64 KiB, {LARGE_COUNT} x {LARGE_SIZE // MIB} MiB)...",
                  flush=True)
            started = time.perf_counter()
            (small_n, small_bytes), (large_n, large_bytes) = seed(gcs)
            print(f"seeded in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.1f} before the runs", flush=True)
            sets = [("small", SMALL_BUCKET, small_n, small_bytes), ("large", LARGE_BUCKET, large_n, large_bytes)]
            if args.only:
                sets = [s for s in sets if s[0] == args.only]
        results: dict[str, dict[str, Series]] = {}
        for name, bucket, count, nbytes in sets:
            series = {m: Series(count, nbytes) for m in ("engine", "seed", "rclone", "noop")}
            methods = ["engine", "rclone"] + ([] if args.skip_seed_loop else ["seed"])
            warm_up(name, bucket, azurite, env, config, args.workers)
            for run in range(args.runs):
                # Rotate the order so no method always runs on a warmer or busier machine.
                for method in methods[run % len(methods):] + methods[: run % len(methods)]:
                    container = new_container(azurite)
                    if method == "engine":
                        sample, report = engine_run(bucket, container, env, args.workers)
                        if report["objects_copied"] != count or not report["verified"]:
                            raise SystemExit(f"engine run did not copy and verify everything: {report}")
                        noop, report = engine_run(bucket, container, env, args.workers)
                        if report["objects_copied"] != 0 or report["objects_skipped"] != count:
                            raise SystemExit(f"no-op rerun copied something: {report}")
                        series["noop"].samples.append(noop)
                    elif method == "seed":
                        sample = seed_loop(gcs, azurite, bucket, container)
                    else:
                        sample = rclone_run(config, bucket, container, env)
                    series[method].samples.append(sample)
                    drop_container(azurite, container)
                    # Write back what this run left in the page cache (512 MiB on the large set)
                    # now, not during the next method's run.
                    os.sync()
                done = ", ".join(f"{m} {series[m].samples[-1].seconds:.2f} s" for m in (*methods, "noop"))
                print(f"  {name} run {run + 1}: {done}", flush=True)
            results[name] = series
            rows = [("spotshift engine", series["engine"]), ("seed loop (sequential SDK)", series["seed"]),
                    ("rclone --transfers 32", series["rclone"]), ("engine no-op rerun", series["noop"])]
            print_table(f"{name} set: {count} objects, {nbytes / MIB:.1f} MiB (medians of {args.runs})",
                        [(n, s) for n, s in rows if s.samples])

        if "small" in results:
            small = results["small"]
            per_k = 1000 / small["engine"].objects
            print(f"\nclient CPU-seconds per 1,000 small objects: engine {small['engine'].cpu * per_k:.2f}, "
                  f"rclone {small['rclone'].cpu * per_k:.2f}, engine no-op rerun {small['noop'].cpu * per_k:.2f}")
        if "large" in results:
            large = results["large"]
            print(f"engine peak RSS on the large set: {large['engine'].maxrss_mib:.0f} MiB "
                  f"(rclone {large['rclone'].maxrss_mib:.0f} MiB)")
        print()
        if "small" in results:
            small = results["small"]
            ratio = small["engine"].objects_per_second / small["rclone"].objects_per_second
            print(f"ratio engine/rclone small: {ratio:.2f}")
            print_paired("small", small)
        if "large" in results:
            large = results["large"]
            ratio = large["engine"].objects_per_second / large["rclone"].objects_per_second
            print(f"ratio engine/rclone large: {ratio:.2f}")
            print_paired("large", large)
        if "small" in results:
            small = results["small"]
            if small["seed"].samples:
                ratio = small["engine"].objects_per_second / small["seed"].objects_per_second
                print(f"ratio engine/seed small: {ratio:.2f}")
            print(f"noop-rerun seconds small: {small['noop'].seconds:.2f}")
        if not args.skip_scale and args.only in (None, "scale"):
            run_scale(args, env, gcs, azurite, config)
    return 0


def print_paired(name: str, series: dict[str, Series]) -> None:
    """The engine/rclone ratio of each run (the two ran one after the other) and their median.

    The emulators' speed drifts between runs (Azurite's CPU for the same 512 MiB
    ranged from 1.9 to 4.9 s here); a run's two methods see about the same drift,
    so the ratio run by run varies less than the ratio of two medians.
    """
    ratios = [r.seconds / e.seconds for e, r in zip(series["engine"].samples, series["rclone"].samples)]
    listed = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"  {name}, run by run: {listed} (median {statistics.median(ratios):.2f})")


def warm_up(name: str, bucket: str, azurite: Azurite, env: dict[str, str], config: Path,
            workers: int | None) -> None:
    """One untimed copy of the set by the engine and by rclone before the timed runs.

    The first copy of a set after a switch of object size met emulators not
    yet warmed for it, and in the rotation that run is always the engine's:
    on the large set its first run took 6.24 s against 3.76 and 3.41 s after
    (rclone's, second: 4.54 s against 3.72 and 3.59 s).
    """
    done = []
    for method in ("engine", "rclone"):
        container = new_container(azurite)
        if method == "engine":
            sample, _ = engine_run(bucket, container, env, workers)
        else:
            sample = rclone_run(config, bucket, container, env)
        drop_container(azurite, container)
        os.sync()
        done.append(f"{method} {sample.seconds:.2f} s")
    print(f"  {name} warm-up (untimed): {', '.join(done)}", flush=True)


def run_scale(args: argparse.Namespace, env: dict[str, str], gcs: FakeGcsServer, azurite: Azurite,
              config: Path) -> None:
    """The scale section (``bench/scale.py``), once each: the 1M-object runs are long on 2 shared cores."""
    rclone = "/usr/bin/rclone" if Path("/usr/bin/rclone").exists() else str(shutil.which("rclone"))
    args.scale_dir.mkdir(parents=True, exist_ok=True)
    print(f"\nscale section (engine from {CODE_ROOT}; load average {os.getloadavg()[0]:.1f})", flush=True)
    if args.before_root is not None:
        compileall.compile_dir(args.before_root / "app", quiet=1)
        compileall.compile_dir(args.before_root / "migration", quiet=1)
    runner = scale.Scale(run_child, spotshift_command(), env, args.scale_dir, rclone,
                         before=args.before_root.resolve() if args.before_root else None)
    try:
        local = runner.local(args.scale_local) if args.scale_local else None
        dry = runner.dry_run(args.scale_dry) if args.scale_dry else None
        emu = runner.emulators(args.scale_emulator, gcs, azurite, config) if args.scale_emulator else None
    finally:
        runner.clean_up()
    scale.summarize(local, args.scale_local, dry, args.scale_dry, emu, args.scale_emulator, runner.azurite)


if __name__ == "__main__":
    sys.exit(main())
