"""Benchmark of the workload's queue and API on Azurite: cost per call as history grows.

Seeds 50 and 20,000 queued jobs into fresh Azurite containers and measures,
medians of 5, the latency and storage requests of ``GET /``, ``GET /jobs``,
``GET /metrics`` and one ``claim()``; then drains 300 jobs with 1 and with 8
workers (threads, each with its own store client) and counts storage requests
and lost lease races per job. Every figure is printed next to its ratio
(20,000 vs 50 jobs; 8 vs 1 workers), measured in the same run. Run it with
``make bench-workload``; it is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from app.api.main import create_app  # noqa: E402
from app.queue import LEASES, Queue  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.storage.azure import AzureBlobStore  # noqa: E402
from app.storage.base import PreconditionFailed  # noqa: E402
from app.storage.emulators import Azurite  # noqa: E402

RUNS = 5
PAYLOAD = b"\x89PNG\r\n\x1a\n" + b"\0" * 56


class Counted:
    """Counts the HTTP requests and lost lease writes of one AzureBlobStore (wraps its methods in place)."""

    def __init__(self, store: AzureBlobStore) -> None:
        self.store = store
        self.requests = 0
        self.lost_races = 0
        self._lock = threading.Lock()
        send, put = store._send, store.put

        def counted_send(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.requests += 1
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


def new_store(azurite: Azurite) -> tuple[str, AzureBlobStore]:
    """A fresh container and a store on it."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name, AzureBlobStore(name, connection_string=azurite.connection_string)


def seed(store: AzureBlobStore, count: int) -> float:
    """Submit ``count`` small jobs through the queue itself (16 threads); seconds taken."""
    queue = Queue(store)
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        for done, _ in enumerate(pool.map(lambda i: queue.submit(PAYLOAD, f"seed-{i}.png", "image/png"), range(count))):
            if done and done % 5000 == 0:
                print(f"  ... {done} jobs seeded after {time.perf_counter() - start:.0f}s", flush=True)
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


def history_figures(azurite: Azurite, jobs: int) -> dict[str, tuple[float, float]]:
    """Latency and requests of the API's pages and of one claim with ``jobs`` queued jobs in the store."""
    container, store = new_store(azurite)
    took = seed(store, jobs)
    print(f"  seeded {jobs} jobs in {took:.1f}s", flush=True)
    counted = Counted(store)
    settings = Settings(
        STORAGE_BACKEND="azure",
        AZURE_CONTAINER=container,
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
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


def drain(azurite: Azurite, workers: int, jobs: int) -> tuple[float, float, float]:
    """Requests and lost races per job, and seconds, for ``workers`` threads draining ``jobs`` jobs."""
    container, seeder = new_store(azurite)
    seed(seeder, jobs)
    stores = [seeder] + [
        AzureBlobStore(container, connection_string=azurite.connection_string) for _ in range(workers - 1)
    ]
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


def ratio(after: float, before: float) -> str:
    """``after / before`` as text (``-`` when the baseline is 0)."""
    return f"{after / before:6.2f}x" if before else "     -"


def main() -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=50, help="jobs in the small store (default 50)")
    parser.add_argument("--large", type=int, default=20_000, help="jobs in the large store (default 20,000)")
    parser.add_argument("--drain", type=int, default=300, help="jobs drained by 1 and by 8 workers (default 300)")
    args = parser.parse_args()
    with Azurite(in_memory=True) as azurite:  # on disk, Azurite slows down as its database grows
        print(f"history: {args.small} vs {args.large} queued jobs, medians of {RUNS}", flush=True)
        small = history_figures(azurite, args.small)
        large = history_figures(azurite, args.large)
        print(f"{'call':<14}{args.small:>9} ms{args.large:>9} ms{'ratio':>9}"
              f"{args.small:>9} req{args.large:>9} req{'ratio':>9}")
        for name in small:
            (ms_a, req_a), (ms_b, req_b) = small[name], large[name]
            print(f"{name:<14}{ms_a:12.1f}{ms_b:12.1f}{ratio(ms_b, ms_a):>9}"
                  f"{req_a:13.0f}{req_b:13.0f}{ratio(req_b, req_a):>9}")
        print(f"drain: {args.drain} jobs", flush=True)
        one = drain(azurite, 1, args.drain)
        eight = drain(azurite, 8, args.drain)
        print(f"{'workers':<10}{'req/job':>10}{'lost races/job':>16}{'seconds':>10}")
        for label, (req, races, took) in (("1", one), ("8", eight)):
            print(f"{label:<10}{req:10.2f}{races:16.2f}{took:10.1f}")
        print(f"{'8 vs 1':<10}{ratio(eight[0], one[0]):>10}{'':>16}{ratio(eight[2], one[2]):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
