"""Benchmark of the workload's queue and API on Azurite: cost per call as history grows.

Seeds 50 and 20,000 queued jobs (through ``Queue.submit``, so the objects are
exactly what the API writes) into one in-memory Azurite and measures, medians
of 5, the latency and storage requests of ``GET /``, ``GET /jobs``,
``GET /metrics`` and one ``claim()``; then, in a fresh Azurite, drains 300
jobs with 1 and with 8 workers (threads, each with its own store client) and
counts storage requests and lost lease races per job. Every figure is printed
next to its ratio (20,000 vs 50 jobs; 8 vs 1 workers), measured in the same run.

Azurite's own cost per request grows with the number of blobs it holds (all
containers together), so both stores are seeded before either is measured:
the emulator's slowdown is the same for both and the latency ratio shows the
workload's growth, not Azurite's. The request counts do not depend on it.

``--before-root DIR`` also measures a checkout of an earlier version (e.g.
``git worktree add /tmp/before 89e56b5``): a child process with that code on
its path measures the same two seeded stores, and drains its own 300 jobs.
Run it with ``make bench-workload``; it is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
#: The checkout whose ``app`` is measured: this one, or ``--code-root`` (the child of ``--before-root``).
CODE_ROOT = Path(os.environ.get("SPOTSHIFT_BENCH_CODE_ROOT", REPO)).resolve()
sys.path.insert(0, str(CODE_ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from app.api.main import create_app  # noqa: E402
from app.queue import LEASES, Queue  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage.azure import AzureBlobStore  # noqa: E402
from app.storage.base import PreconditionFailed  # noqa: E402

if TYPE_CHECKING:
    from app.storage.emulators import Azurite

RUNS = 5
PAYLOAD = b"\x89PNG\r\n\x1a\n" + b"\0" * 56
#: Targets of issue 11: request ratios 20,000 vs 50 jobs, and requests per job 8 vs 1 workers.
HISTORY_TARGET = 2.0
WORKERS_TARGET = 1.5
_CONNECTION = "SPOTSHIFT_BENCH_AZURE_CONNECTION_STRING"


class Counted:
    """Counts the HTTP requests and lost lease writes of one AzureBlobStore (wraps its methods in place)."""

    #: Seconds added to every request, like a network round trip to a real store (``--rtt-ms``).
    rtt = 0.0

    def __init__(self, store: AzureBlobStore) -> None:
        self.store = store
        self.requests = 0
        self.lost_races = 0
        self._lock = threading.Lock()
        send, put = store._send, store.put

        def counted_send(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.requests += 1
            if self.rtt:
                time.sleep(self.rtt)
            return send(*args, **kwargs)

        def counted_put(key: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return put(key, *args, **kwargs)
            except PreconditionFailed:
                if key.startswith(LEASES):
                    with self._lock:
                        self.lost_races += 1
                raise

        store._send = counted_send  # type: ignore[method-assign]
        store.put = counted_put  # type: ignore[method-assign]


def new_container(azurite: Azurite) -> str:
    """A fresh, empty container's name in ``azurite``."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


def seed(store: AzureBlobStore, count: int, threads: int = 16) -> float:
    """Submit ``count`` small jobs through the queue itself; seconds taken."""
    queue = Queue(store)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(lambda i: queue.submit(PAYLOAD, f"seed-{i}.png", "image/png"), range(count)),
                                 start=1):
            if done % 2000 == 0 and done < count:
                print(f"  ... {done} of {count} jobs seeded after {time.perf_counter() - start:.0f}s", flush=True)
    return time.perf_counter() - start


def measure(counted: Counted, call: Callable[[], Any]) -> tuple[float, float]:
    """Median latency (ms) and median storage requests of ``call`` over RUNS runs."""
    times, requests = [], []
    for _ in range(RUNS):
        before = counted.requests
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
        requests.append(counted.requests - before)
    return statistics.median(times), statistics.median(requests)


def history_figures(connection_string: str, container: str) -> dict[str, tuple[float, float]]:
    """Latency and requests of the API's pages and of one claim on an already seeded ``container``."""
    store = AzureBlobStore(container, connection_string=connection_string)
    counted = Counted(store)
    settings = Settings(
        STORAGE_BACKEND="azure",
        AZURE_CONTAINER=container,
        AZURE_STORAGE_CONNECTION_STRING=connection_string,
    )
    queue = Queue(store)
    figures = {}
    with TestClient(create_app(settings, store)) as client:
        for path in ("/", "/jobs", "/metrics"):
            def get(path: str = path) -> None:
                response = client.get(path)
                if response.status_code != 200:
                    raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:200]}")
            get()  # warm-up: templates, first connection
            figures[f"GET {path}"] = measure(counted, get)
        figures["claim()"] = measure(counted, lambda: queue.claim("bench-claimer"))
    return figures


def drain(connection_string: str, container: str, workers: int, jobs: int) -> tuple[float, float, float]:
    """Requests and lost races per job, and seconds, for ``workers`` threads draining ``jobs`` jobs from an
    empty ``container``."""
    seed(AzureBlobStore(container, connection_string=connection_string), jobs)
    stores = [AzureBlobStore(container, connection_string=connection_string) for _ in range(workers)]
    counters = [Counted(store) for store in stores]
    done = [0] * workers

    def work(index: int) -> None:
        queue = Queue(stores[index])
        idle = 0
        while idle < 3:
            claim = queue.claim(f"bench-{index}")
            if claim is None:
                idle += 1
                time.sleep(0.05)
                continue
            idle = 0
            queue.read_input(claim.job)
            queue.complete(claim, PAYLOAD)
            done[index] += 1
        flush = getattr(queue, "flush", None)  # deferred lease deletes (this version's queue)
        if flush is not None:
            flush()

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - start
    finished = sum(done)
    if finished != jobs:
        raise SystemExit(f"{workers} workers finished {finished} of {jobs} jobs")
    requests = sum(c.requests for c in counters)
    races = sum(c.lost_races for c in counters)
    return requests / jobs, races / jobs, took


def ratio(after: float, before: float) -> float | None:
    """``after / before`` (None when the baseline is 0)."""
    return after / before if before else None


def show(value: float | None) -> str:
    """A ratio as text, ``-`` for none."""
    return f"{value:6.2f}x" if value is not None else "     -"


def verdict(value: float | None, target: float) -> str:
    """Whether a ratio meets its target."""
    return "met" if value is not None and value <= target else "NOT met"


def print_history(label: str, small: dict, large: dict, n_small: int, n_large: int) -> list[float | None]:
    """The history table; returns the request ratios."""
    print(f"history ({label}): {n_small} vs {n_large} queued jobs, medians of {RUNS}")
    print(f"  {'call':<14}{n_small:>9} ms{n_large:>9} ms{'ratio':>9}{n_small:>9} req{n_large:>9} req{'ratio':>9}")
    ratios = []
    for name in small:
        (ms_a, req_a), (ms_b, req_b) = small[name], large[name]
        ratios.append(ratio(req_b, req_a))
        print(f"  {name:<14}{ms_a:12.1f}{ms_b:12.1f}{show(ratio(ms_b, ms_a)):>9}"
              f"{req_a:13.0f}{req_b:13.0f}{show(ratios[-1]):>9}")
    return ratios


def print_drain(label: str, one: tuple, eight: tuple, jobs: int) -> float | None:
    """The drain table; returns the requests-per-job ratio 8 vs 1."""
    print(f"drain ({label}): {jobs} jobs")
    print(f"  {'workers':<10}{'req/job':>10}{'lost races/job':>16}{'seconds':>10}")
    for name, (req, races, took) in (("1", one), ("8", eight)):
        print(f"  {name:<10}{req:10.2f}{races:16.2f}{took:10.1f}")
    per_job = ratio(eight[0], one[0])
    print(f"  {'8 vs 1':<10}{show(per_job):>10}{'':>16}{show(ratio(eight[2], one[2])):>10}")
    return per_job


def child(args: argparse.Namespace) -> int:
    """``--before-root``'s child: measure with the code on this process's path, print JSON."""
    connection_string = os.environ[_CONNECTION]
    if args.child == "history":
        out: Any = {name: history_figures(connection_string, name) for name in args.containers}
    else:
        out = [drain(connection_string, name, workers, args.drain) for name, workers in zip(args.containers, (1, 8))]
    print(json.dumps(out))
    return 0


def run_before(before_root: Path, connection_string: str, *argv: str) -> Any:
    """Run this benchmark's child with ``before_root``'s code; its JSON answer."""
    env = {**os.environ, _CONNECTION: connection_string, "SPOTSHIFT_BENCH_CODE_ROOT": str(before_root)}
    argv = (*argv, "--rtt-ms", str(Counted.rtt * 1000))
    done = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run of {before_root} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    """Run the benchmark and print its tables and targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50, help="jobs in the small store (default 50)")
    parser.add_argument("--large", type=int, default=20_000, help="jobs in the large store (default 20,000)")
    parser.add_argument("--drain", type=int, default=300, help="jobs drained by 1 and by 8 workers (default 300)")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="add this many ms to every measured request, like a real store's round trip (default 0)")
    parser.add_argument("--before-root", type=Path, default=None,
                        help="also measure the checkout in this directory (an earlier commit) on the same stores")
    parser.add_argument("--child", choices=("history", "drain"), help=argparse.SUPPRESS)
    parser.add_argument("--containers", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    Counted.rtt = args.rtt_ms / 1000
    if args.child:
        return child(args)
    if args.before_root is not None and not (args.before_root / "app" / "queue.py").is_file():
        parser.error(f"--before-root {args.before_root}: not a spotshift checkout (no app/queue.py)")
    from app.storage.emulators import Azurite  # this checkout's, whatever CODE_ROOT is

    before_label = f"before: {args.before_root}" if args.before_root else ""
    targets: list[tuple[str, float | None, float]] = []
    with Azurite(in_memory=True) as azurite:  # on disk, Azurite slows down even more as it grows
        cs = azurite.connection_string
        stores = {}
        for jobs in (args.large, args.small):
            stores[jobs] = new_container(azurite)
            took = seed(AzureBlobStore(stores[jobs], connection_string=cs), jobs)
            print(f"seeded {jobs} jobs in {took:.1f}s", flush=True)
        small = history_figures(cs, stores[args.small])
        large = history_figures(cs, stores[args.large])
        if args.before_root:
            before = run_before(args.before_root, cs, "--child", "history",
                                "--containers", stores[args.small], stores[args.large])
            print_history(before_label, before[stores[args.small]], before[stores[args.large]],
                          args.small, args.large)
        for name, value in zip(small, print_history("this code", small, large, args.small, args.large)):
            targets.append((f"{name} requests, {args.large} vs {args.small} jobs", value, HISTORY_TARGET))
    with Azurite(in_memory=True) as azurite:  # a fresh one: the drain does not pay for the history's blobs
        cs = azurite.connection_string
        if args.before_root:
            one, eight = run_before(args.before_root, cs, "--child", "drain", "--drain", str(args.drain),
                                    "--containers", new_container(azurite), new_container(azurite))
            print_drain(before_label, one, eight, args.drain)
        one = drain(cs, new_container(azurite), 1, args.drain)
        eight = drain(cs, new_container(azurite), 8, args.drain)
        targets.append(("requests per job, 8 vs 1 workers",
                        print_drain("this code", one, eight, args.drain), WORKERS_TARGET))
    print("targets")
    for name, value, target in targets:
        print(f"  {name:<44}{show(value)} (target <= {target:.1f}x) {verdict(value, target)}")
    return 0 if all(verdict(v, t) == "met" for _, v, t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
