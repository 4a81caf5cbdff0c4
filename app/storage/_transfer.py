"""Helpers the cloud backends share: body buffering, in-transit checksums, HTTP plumbing.

Private to ``app.storage``; nothing here imports a cloud SDK.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Iterator
from itertools import chain
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .base import Body, Hasher, IntegrityError, iter_body


class BodyAborted(Exception):
    """Raised inside an HTTP request body to abort the upload; the real cause is in ``error``.

    Deliberately not an ``OSError``: urllib3 turns OSErrors raised while
    sending into retryable connection errors, which would hide an
    ``IntegrityError`` or a source store's ``ObjectNotFound``.
    """


def prefetch(body: Body, limit: int, size: int | None) -> tuple[bytes | None, Iterator[bytes]]:
    """Buffer the body if it holds at most ``limit`` bytes.

    Returns ``(data, empty)`` when the whole body fit, else ``(None, chunks)``
    where ``chunks`` yields the entire body as ``bytes`` (the part read so far
    first). A body whose ``size`` is known to exceed the limit is not read here.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        if len(body) <= limit:
            return bytes(body), iter(())
        return None, iter_body(body)
    chunks = _as_bytes(iter_body(body))
    if size is not None and size > limit:
        return None, chunks
    held: deque[bytes] = deque()
    total = 0
    for chunk in chunks:
        held.append(chunk)
        total += len(chunk)
        if total > limit:
            return None, chain(_drain(held), chunks)
    return b"".join(held), iter(())


def _as_bytes(chunks: Iterator[bytes]) -> Iterator[bytes]:
    # Iterables may yield bytearray or memoryview; HTTP bodies and slicing below want bytes.
    for chunk in chunks:
        yield chunk if type(chunk) is bytes else bytes(chunk)


def _drain(held: deque[bytes]) -> Iterator[bytes]:
    # Pop as we go so chunks already sent are not kept alive by the deque.
    while held:
        yield held.popleft()


def _take(pending: deque[bytes], wanted: int) -> bytes:
    """Remove and return the first ``wanted`` bytes of a deque of chunks (splitting one if needed)."""
    parts: list[bytes] = []
    taken = 0
    while taken < wanted:
        chunk = pending.popleft()
        if taken + len(chunk) > wanted:
            cut = wanted - taken
            pending.appendleft(chunk[cut:])
            chunk = chunk[:cut]
        parts.append(chunk)
        taken += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def regroup(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    """Yield the bytes of ``chunks`` in pieces of exactly ``size`` (the last may be shorter)."""
    pending: deque[bytes] = deque()
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= size:
            held -= size
            yield _take(pending, size)
    if held:
        yield _take(pending, held)


class CheckedBody:
    """Pass a body through while hashing it; verify when the source ends, before its last bytes go out.

    Iterating yields the chunks one step behind the source, so the final
    chunk is only released after the size and the expected checksums have
    been checked: on a mismatch the HTTP request is aborted mid-body and the
    server never commits the object. ``read``/``tell`` give the same
    guarantee to readers that pull fixed-size pieces (GCS resumable upload:
    the piece that would finalize the upload is never returned).

    Any exception (mismatch or a failure of the source) is kept in ``error``
    and surfaces as ``BodyAborted``; the caller re-raises ``error``.
    ``md5=False`` leaves the MD5 to a server that checks a Content-MD5 header.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        key: str,
        *,
        expected_md5: str | None = None,
        expected_crc32c: str | None = None,
        size: int | None = None,
        md5: bool = True,
    ) -> None:
        self._chunks = chunks
        self._key = key
        self._expected_md5 = expected_md5
        self._expected_crc32c = expected_crc32c
        self._size = size
        self.hasher = Hasher(md5=md5)
        self.error: BaseException | None = None
        self._pending: deque[bytes] = deque()
        self._pending_size = 0
        self._exhausted = False
        self._position = 0

    def __len__(self) -> int:
        # requests sends Content-Length (not chunked encoding) for bodies with a length.
        if self._size is None:
            raise TypeError("CheckedBody has no declared size")
        return self._size

    def _pull(self) -> bytes | None:
        """Next chunk from the source (hashed), or None once it is exhausted and verified."""
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._exhausted = True
            self._verify()
            return None
        except Exception as err:
            raise self._abort(err) from err
        self.hasher.update(chunk)
        if self._size is not None and self.hasher.size > self._size:
            raise self._abort(
                IntegrityError(f"{self._key}: body is longer than the declared size of {self._size} bytes")
            )
        return chunk

    def _verify(self) -> None:
        if self._size is not None and self.hasher.size != self._size:
            raise self._abort(
                IntegrityError(f"{self._key}: body has {self.hasher.size} bytes, the declared size was {self._size}")
            )
        try:
            self.hasher.check(self._key, self._expected_md5, self._expected_crc32c)
        except IntegrityError as err:
            raise self._abort(err) from None

    def _abort(self, err: BaseException) -> BodyAborted:
        self.error = err
        return BodyAborted(str(err))

    def __iter__(self) -> Iterator[bytes]:
        held = None
        while (chunk := self._pull()) is not None:
            if held is not None:
                yield held
            held = chunk
        if held is not None:
            yield held

    def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes; the read that reaches the end verifies first."""
        # Keep reading until we hold more than asked for, so the end of the
        # source is always discovered by the read that would return the last byte.
        while not self._exhausted and (n < 0 or self._pending_size <= n):
            chunk = self._pull()
            if chunk is not None:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
        out = _take(self._pending, self._pending_size if n < 0 else min(n, self._pending_size))
        self._pending_size -= len(out)
        self._position += len(out)
        return out

    def tell(self) -> int:
        """Bytes returned by ``read`` so far."""
        return self._position

    @property
    def finished(self) -> bool:
        """True once the source has ended and passed verification."""
        return self._exhausted and self.error is None


def tune_session(session: requests.Session, endpoint: str, pool_size: int) -> None:
    """Size the connection pool for many threads and stop per-request environment lookups."""
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    for prefix in ("http://", "https://"):
        # Keep special adapters (e.g. google-auth's mutual-TLS adapter) as they are.
        if type(session.get_adapter(prefix + "example.invalid")) is HTTPAdapter:
            session.mount(prefix, adapter)
    if session.trust_env:
        # With trust_env, requests re-reads every proxy variable and ~/.netrc on
        # each request: about 1 ms of CPU per call, the biggest single cost of a
        # small-object request. A store talks to one endpoint, so resolve the
        # proxy and CA bundle settings once here instead.
        session.proxies.update(requests.utils.get_environ_proxies(endpoint))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle and session.verify is True:
            session.verify = bundle
        session.trust_env = False


#: Transport failures of a urllib3 call (connection refused or reset, timeouts, TLS, proxy).
HTTP_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
#: Statuses worth retrying for an idempotent request.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@contextlib.contextmanager
def released(response: urllib3.BaseHTTPResponse) -> Iterator[None]:
    """Give ``response``'s connection back to its pool at the end; close it first unless the body was read whole."""
    try:
        yield
    except BaseException:  # an error, or a consumer that stopped reading (GeneratorExit)
        response.close()  # unread bytes left: the connection cannot be reused
        raise
    finally:
        response.release_conn()


def http_pool(endpoint: str, pool_size: int, read_timeout: float, connect_timeout: float) -> urllib3.PoolManager:
    """A urllib3 pool for the hot per-object calls, honouring the proxy and CA-bundle variables.

    Plain urllib3 costs about half the CPU of a requests call (no cookie jar,
    hooks, environment merging or response wrapping); with 32 threads on two
    cores that is the difference between the client or the server being the
    bottleneck. ``retries=False`` because the callers retry (only what is safe to).
    """
    options = {
        "num_pools": 4,
        "maxsize": pool_size,
        # urllib3 reads file-like bodies in blocksize pieces (16 KiB by default):
        # a CheckedBody holds 256 KiB chunks, which would be re-sliced 16 times.
        "blocksize": 256 * 1024,
        "retries": False,
        "timeout": urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        "cert_reqs": "CERT_REQUIRED",
        "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or requests.certs.where(),
    }
    proxies = requests.utils.get_environ_proxies(endpoint)  # empty when NO_PROXY matches
    proxy = proxies.get(urlsplit(endpoint).scheme) or proxies.get("all")
    if not proxy:
        return urllib3.PoolManager(**options)
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    headers = None
    if parts.username:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = urllib3.util.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(
        parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl(),
        proxy_headers=headers,
        **options,
    )


def backoff(attempt: int) -> None:
    """Sleep before retry ``attempt`` (0-based): 0.25 s, 0.5 s, 1 s... capped at 8 s, with jitter."""
    time.sleep(min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0))
