"""``AzureBlobStore``: an ObjectStore on an Azure Blob container (or Azurite).

The SDK builds the client: it parses the connection string or account URL
and sets up authentication (account key, SAS, or Entra ID via
``DefaultAzureCredential``, which honours ``AZURE_CLIENT_ID`` for a
user-assigned managed identity); ``ping`` uses it as is. The hot calls (Put
Blob, Put Block, Put Block List, Get Blob, Get Blob Properties, Delete Blob,
List Blobs) are plain REST requests, signed by the SDK's own
credential policy and sent with urllib3 (``http_pool``). Measured on Azurite
with 32 threads, this takes the client CPU of a small upload from about
2.5-3 ms (``upload_blob``) to about 1 ms, and it is the only way to stream one
Put Blob from an iterator: ``upload_blob`` reads a single-put body whole into
memory first.

Uploads (Put Blob checks a transactional ``Content-MD5`` over the bytes it
receives and commits nothing on a mismatch, so an expected MD5 is sent for
Azure to check rather than computed here; size and CRC32C are always checked
locally over the bytes in transit):

* up to ``buffer_max`` (8 MiB): buffered and checked, then one Put Blob with
  ``Content-MD5`` (the expected one, or computed here when none is expected);
* known size up to ``single_put_max`` (64 MiB): one Put Blob streamed through
  a ``CheckedBody`` that verifies size and checksums before releasing the
  last bytes, so a mismatch aborts the request and nothing is committed
  (Azurite spends about 3x more CPU on block uploads than on one Put Blob);
* otherwise: Put Block per ``block_size`` piece, and Put Block List only
  after the checksums match (uncommitted blocks are never visible).

Azure has no CRC32C property, so the CRC32C is kept in the reserved metadata
entry ``spotshift_crc32c`` whenever it is known before the upload commits
(always, except a streamed Put Blob given no ``expected_crc32c``), and
``ObjectInfo.crc32c`` reads it back, from listings too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import heapq
import json
import re
import uuid
from collections.abc import Generator, Iterator, Mapping
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.etree import ElementTree

import requests
import urllib3
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest, RequestsTransport
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)
from azure.storage.blob import __version__ as _SDK_VERSION

from ._transfer import (
    HTTP_ERRORS,
    RETRY_STATUSES,
    BodyAborted,
    CheckedBody,
    backoff,
    http_pool,
    prefetch,
    regroup,
    released,
    tune_session,
)
from .base import (
    CHUNK_SIZE,
    Body,
    Hasher,
    IntegrityError,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    Page,
    PreconditionFailed,
    StorageConfigError,
    StorageError,
    TransientStorageError,
    FANOUT_MAX_FOLDERS,
    by_folders,
    validate_key,
)

#: Bodies up to this size are buffered and checked before one Put Blob.
BUFFER_MAX = 8 * 1024 * 1024
#: Bodies of known size up to this go in one streamed Put Blob (Azure allows 5000 MiB).
SINGLE_PUT_MAX = 64 * 1024 * 1024
#: Put Block piece size for larger or unsized bodies.
BLOCK_SIZE = 8 * 1024 * 1024
#: Bytes of a List Blobs response fed to the parser at once.
_LIST_CHUNK = 64 * 1024
#: Blobs per List Blobs request of ``list`` (Azure's maximum).
LIST_PAGE_SIZE = 5000
#: Folder listings ``list`` reads at once ahead of the consumer (measured on Azurite: see ``list``).
LIST_FANOUT = 4
#: Reserved metadata entry holding the CRC32C (hex); hidden from ``ObjectInfo.metadata``.
CRC32C_METADATA_KEY = "spotshift_crc32c"
#: Reserved metadata entry holding, base64-encoded JSON, the entries Azure cannot store as they are.
PACKED_METADATA_KEY = "spotshift_meta"

_CREDENTIALS_HINT = (
    "check the account key or SAS in AZURE_STORAGE_CONNECTION_STRING, or, with AZURE_STORAGE_ACCOUNT_URL, "
    "run `az login` (or set AZURE_CLIENT_ID for a user-assigned managed identity) and grant "
    "'Storage Blob Data Contributor' on the container"
)
# Azure metadata names must be C# identifiers; values travel as HTTP headers.
_METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METADATA_VALUE = re.compile(r"^[\x20-\x7e]*$")
_META_PREFIX = "x-ms-meta-"
_USER_AGENT = f"spotshift azsdk-python-storage-blob/{_SDK_VERSION}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _quote_etag(etag: str) -> str:
    # Get Blob Properties returns ETags quoted, List Blobs unquoted: keep one form.
    return etag if etag.startswith('"') else f'"{etag}"'


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return the metadata, or raise ``ValueError`` for reserved names and values that are not strings."""
    checked = dict(metadata or {})
    for name, value in checked.items():
        if name.lower() in (CRC32C_METADATA_KEY, PACKED_METADATA_KEY):
            raise ValueError(f"metadata name {name!r} is reserved by spotshift")
        if not isinstance(value, str):
            raise ValueError(f"metadata {name!r}: the value must be a string")
    return checked


def _encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata as Azure can hold it: entries it cannot (names with '-', non-ASCII values) packed in one."""
    plain: dict[str, str] = {}
    packed: dict[str, str] = {}
    for name, value in metadata.items():
        if _METADATA_NAME.match(name) and _METADATA_VALUE.match(value):
            plain[name] = value
        else:
            # Azure names must be C# identifiers and values printable ASCII; GCS
            # allows e.g. "content-lang" or "é". Kept reversibly, not rejected.
            packed[name] = value
    if packed:
        document = json.dumps(packed, ensure_ascii=False, sort_keys=True).encode()
        plain[PACKED_METADATA_KEY] = base64.urlsafe_b64encode(document).decode()
    return plain


def _split_crc(metadata: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """User metadata (packed entries unpacked) and the stored CRC32C, from what Azure returns."""
    user: dict[str, str] = {}
    crc32c = None
    for name, value in metadata.items():
        lowered = name.lower()
        if lowered == CRC32C_METADATA_KEY:
            crc32c = value.lower()
        elif lowered == PACKED_METADATA_KEY:
            try:
                unpacked = json.loads(base64.urlsafe_b64decode(value or ""))
            except ValueError:
                user[name] = value or ""
                continue
            if isinstance(unpacked, dict):
                user.update({str(k): str(v) for k, v in unpacked.items()})
        else:
            user[name] = value or ""  # List Blobs reports an empty value as None
    return user, crc32c


#: The elements of a List Blobs response that ``_page`` yields: a blob, a folder.
_LISTED = frozenset(("Blob", "BlobPrefix"))
#: An HTTP date (Last-Modified) as a datetime; objects copied in bulk share a few hundred seconds.
_http_date = functools.lru_cache(maxsize=4096)(parsedate_to_datetime)


def _name(entry: ElementTree.Element) -> str:
    """The ``<Name>`` of a ``<Blob>`` or ``<BlobPrefix>`` of a List Blobs response."""
    name = entry.find("Name")
    if name is None:
        return ""
    if name.get("Encoded") == "true":
        # Names with characters XML cannot carry come percent-encoded.
        return unquote(name.text or "")
    return name.text or ""


def _service_order(entry: ObjectInfo | str) -> bytes:
    """Where a blob or a folder ("a/", which sorts where its keys do) comes in a listing: by UTF-16 code units.

    Azurite compares names as JavaScript strings, by UTF-16 code units
    (tests/storage/test_listing_order.py); below U+D800 that is code point order.
    """
    return (entry if isinstance(entry, str) else entry.key).encode("utf-16-be")


def listing_info(blob: ElementTree.Element) -> ObjectInfo:
    """Build ``ObjectInfo`` from one ``<Blob>`` of a List Blobs response (``include=metadata``)."""
    key = _name(blob)
    props = blob.find("Properties")
    # One pass over the properties (about fifteen) instead of a find() per field.
    prop = {child.tag: child.text for child in props} if props is not None else {}
    meta = blob.find("Metadata")
    raw_meta = {child.tag: child.text or "" for child in meta} if meta is not None else {}
    raw_meta.pop("x-ms-invalid-name", None)
    metadata, crc32c = _split_crc(raw_meta)
    md5 = prop.get("Content-MD5")
    modified = prop.get("Last-Modified")
    etag = prop.get("Etag")
    return ObjectInfo(
        key=key,
        size=int(prop.get("Content-Length") or 0),
        content_type=prop.get("Content-Type") or None,
        md5=binascii.a2b_base64(md5).hex() if md5 else None,
        crc32c=crc32c,
        version=_quote_etag(etag) if etag else None,
        updated=_http_date(modified) if modified else None,
        metadata=metadata,
        content_encoding=prop.get("Content-Encoding") or None,
        cache_control=prop.get("Cache-Control") or None,
    )


def headers_info(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    """Build ``ObjectInfo`` from Get Blob Properties response headers."""
    raw_meta = {
        name[len(_META_PREFIX) :]: value for name, value in headers.items() if name.lower().startswith(_META_PREFIX)
    }
    metadata, crc32c = _split_crc(raw_meta)
    md5 = headers.get("Content-MD5")
    modified = headers.get("Last-Modified")
    etag = headers.get("ETag")
    return ObjectInfo(
        key=key,
        size=int(headers.get("Content-Length") or 0),
        content_type=headers.get("Content-Type"),
        md5=binascii.a2b_base64(md5).hex() if md5 else None,
        crc32c=crc32c,
        version=_quote_etag(etag) if etag else None,
        updated=_http_date(modified) if modified else None,
        metadata=metadata,
        content_encoding=headers.get("Content-Encoding"),
        cache_control=headers.get("Cache-Control"),
    )


class AzureBlobStore(ObjectStore):
    """Objects in an Azure Blob container; thread-safe, one shared client and connection pool."""

    scheme = "az"

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        client: BlobServiceClient | ContainerClient | None = None,
        pool_size: int = 64,
        timeout: float = 60.0,
        retries: int = 3,
        buffer_max: int = BUFFER_MAX,
        single_put_max: int = SINGLE_PUT_MAX,
        block_size: int = BLOCK_SIZE,
        list_page_size: int = LIST_PAGE_SIZE,
        list_fanout: int = LIST_FANOUT,
    ) -> None:
        """Open a container; no request is made until the first call.

        Args:
            container: container name.
            connection_string: account connection string (key or SAS); wins over ``account_url``.
            account_url: ``https://ACCOUNT.blob.core.windows.net``; authenticates with
                ``credential`` or, by default, ``DefaultAzureCredential()``.
            credential: any credential the SDK accepts, used with ``account_url``.
            client: an existing ``BlobServiceClient`` or ``ContainerClient`` (not closed by ``close``).
            pool_size: HTTP connections kept for concurrent calls.
            timeout: seconds for each socket read (connecting gives up after at most 20 s).
            retries: retries of idempotent requests on throttling, 5xx and connection errors.
            buffer_max: bodies up to this size are buffered and checked before sending.
            single_put_max: bodies of known size up to this are streamed in one Put Blob.
            block_size: piece size for block uploads.
            list_page_size: blobs per List Blobs request of ``list`` (1 to 5000).
            list_fanout: folder listings ``list`` reads at once ahead of the consumer; 0 lists flat.
        """
        if not container or "/" in container:
            raise StorageConfigError(f"invalid Azure container name {container!r}")
        if not 1 <= list_page_size <= 5000:
            raise StorageConfigError(f"list_page_size must be between 1 and 5000, got {list_page_size}")
        self.container_name = container
        self._owned: list[Any] = []
        if client is None:
            client = self._build_service(connection_string, account_url, credential, pool_size, timeout, retries)
            self._owned.append(client)
        if isinstance(client, ContainerClient):
            self._container = client
        else:
            self._container = client.get_container_client(container)
        self.container_name = self._container.container_name
        # The container URL carries the SAS query when the credential is a SAS.
        self._base, _, self._sas = self._container.url.partition("?")
        self._host = urlsplit(self._base).netloc
        self._api_version = self._container.api_version
        # The SDK's signing policy (account key or Entra ID token); None with a SAS.
        self._signer = getattr(self._container, "_credential_policy", None)
        self._http = http_pool(self._base, pool_size, timeout, min(timeout, 20.0))
        self._retries = retries
        self._buffer_max = buffer_max
        self._single_max = single_put_max
        self._block_size = block_size
        self._page_size = list_page_size
        self._fanout = list_fanout

    def _build_service(
        self,
        connection_string: str | None,
        account_url: str | None,
        credential: Any,
        pool_size: int,
        timeout: float,
        retries: int,
    ) -> BlobServiceClient:
        session = requests.Session()
        options: dict[str, Any] = {
            "transport": RequestsTransport(
                session=session, session_owner=True, connection_timeout=min(timeout, 20.0), read_timeout=timeout
            ),
            # The SDK default waits 15 s, 18 s, 42 s between tries.
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
            ),
        }
        if connection_string:
            try:
                service = BlobServiceClient.from_connection_string(connection_string, **options)
            except ValueError:
                # The SDK's message is safe, but never echo the string itself: it holds the key.
                raise StorageConfigError(
                    "AZURE_STORAGE_CONNECTION_STRING is malformed: expected "
                    "'AccountName=...;AccountKey=...;...' or 'BlobEndpoint=...;SharedAccessSignature=...'"
                ) from None
        elif account_url:
            if credential is None and "sig=" not in urlsplit(account_url).query:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
                self._owned.append(credential)
            try:
                service = BlobServiceClient(account_url, credential=credential, **options)
            except ValueError as err:
                # The SDK's message may quote the URL, SAS signature included: drop query strings.
                reason = re.sub(r"\?[^\s'\"]*", "?...", str(err))
                raise StorageConfigError(f"AZURE_STORAGE_ACCOUNT_URL rejected: {reason}") from None
        else:
            raise StorageConfigError("Azure storage needs AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL")
        tune_session(session, service.url.partition("?")[0], pool_size)
        return service

    @property
    def url(self) -> str:
        """``az://container``."""
        return f"az://{self.container_name}"

    # -- requests and error translation -------------------------------------------

    def _blob_url(self, key: str, query: str = "") -> str:
        """The URL of blob ``key``, or of the container itself when ``key`` is empty."""
        params = "&".join(part for part in (query, self._sas) if part)
        path = f"{self._base}/{quote(key, safe='/~')}" if key else self._base
        return path + (f"?{params}" if params else "")

    def _send(
        self,
        method: str,
        key: str,
        *,
        expect: tuple[int, ...],
        query: str = "",
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        retry: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """Send one signed REST request; retry what is safe to; raise ours on failure."""
        url = self._blob_url(key, query)
        attempts = 1 + (self._retries if retry else 0)
        for attempt in range(attempts):
            signed_url, signed_headers = self._sign(method, url, headers, key)
            try:
                response = self._http.urlopen(
                    method,
                    signed_url,
                    body=data,
                    headers=signed_headers,
                    redirect=False,
                    preload_content=not stream,
                    decode_content=False,
                )
            except HTTP_ERRORS as err:
                if attempt + 1 < attempts:
                    backoff(attempt)
                    continue
                raise TransientStorageError(
                    f"{self.url}/{key}: cannot reach Azure Blob storage at {self._host} ({type(err).__name__})"
                ) from err
            if response.status in RETRY_STATUSES and attempt + 1 < attempts:
                _discard(response)
                backoff(attempt)
                continue
            break
        if response.status not in expect:
            code = response.headers.get("x-ms-error-code", "")
            if response.status == 400 and code == "InvalidOperation" and "Content-MD5" in (headers or {}):
                # Azurite answers a Content-MD5 mismatch with InvalidOperation ("Provided
                # contentMD5 doesn't match"); Azure says Md5Mismatch.
                message = _error_message(response)
                if "md5" in message.lower():
                    code = "Md5Mismatch"
            _discard(response)
            raise self._status_error(response.status, code, key)
        return response

    def _sign(
        self, method: str, url: str, headers: Mapping[str, str] | None, key: str
    ) -> tuple[str, Mapping[str, str]]:
        """Add the date, version and the SDK credential policy's Authorization header."""
        # Header names stay lowercase: the Shared Key signer only picks up "x-ms-" as written.
        base = {"x-ms-version": self._api_version, "x-ms-date": formatdate(usegmt=True), "user-agent": _USER_AGENT}
        base.update(headers or {})
        if self._signer is None:
            return url, base
        request = HttpRequest(method, url, headers=base)
        try:
            self._signer.on_request(PipelineRequest(request, PipelineContext(None)))
        except ServiceRequestError as err:
            # azure-core refuses to send a bearer token over plain http.
            raise StorageConfigError(
                f"{self.url}: Entra ID credentials need an https:// account URL (AZURE_STORAGE_ACCOUNT_URL)"
            ) from err
        except AzureError as err:
            raise self._translate(err, key) from err
        return request.url, request.headers

    def _status_error(self, status: int, code: str, key: str | None, *, container_call: bool = False) -> StorageError:
        where = f"{self.url}/{key}" if key else self.url
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        if status == 404:
            if container_call or code == "ContainerNotFound":
                return StorageConfigError(f"{self.url}: container does not exist or is not accessible")
            return ObjectNotFound(f"{where}: not found")
        if status in (409, 412):
            return PreconditionFailed(f"{where}: precondition failed ({detail}: blob exists or its ETag changed)")
        if status in (401, 403):
            return StorageConfigError(f"{where}: access denied ({detail}); {_CREDENTIALS_HINT}")
        if status == 400 and code in ("InvalidResourceName", "OutOfRangeInput") and (container_call or not key):
            return StorageConfigError(
                f"{self.url}: invalid container name ({detail}); use 3-63 lowercase letters, digits and '-'"
            )
        if status == 400 and code == "Md5Mismatch":
            return IntegrityError(f"{where}: Azure computed a different MD5 for the bytes it received ({detail})")
        if status in (408, 429) or status >= 500:
            return TransientStorageError(f"{where}: temporary failure ({detail})")
        return StorageError(f"{where}: request rejected ({detail})")

    def _translate(self, err: AzureError, key: str | None, *, container_call: bool = False) -> StorageError:
        where = f"{self.url}/{key}" if key else self.url
        if isinstance(err, ClientAuthenticationError) and not err.status_code:
            # Raised by credentials (CredentialUnavailableError and friends) before any request.
            return StorageConfigError(f"{where}: no usable Azure credential; {_CREDENTIALS_HINT}")
        if isinstance(err, HttpResponseError) and err.status_code:
            code = getattr(err, "error_code", None) or ""
            code = str(getattr(code, "value", code))
            return self._status_error(err.status_code, code, key, container_call=container_call)
        if isinstance(err, (ServiceRequestError, ServiceResponseError)):
            # The SDK's message may quote the request URL, SAS included: leave it out.
            return TransientStorageError(
                f"{where}: cannot reach Azure Blob storage at {self._host} ({type(err).__name__})"
            )
        return StorageError(f"{where}: {type(err).__name__}")

    # -- primitives --------------------------------------------------------------

    def _put_headers(
        self,
        *,
        content_type: str | None,
        metadata: dict[str, str],
        content_encoding: str | None,
        cache_control: str | None,
        crc32c: str | None,
        if_absent: bool,
        if_version: str | None,
    ) -> dict[str, str]:
        headers = {"x-ms-blob-content-type": content_type or "application/octet-stream"}
        if content_encoding:
            headers["x-ms-blob-content-encoding"] = content_encoding
        if cache_control:
            headers["x-ms-blob-cache-control"] = cache_control
        for name, value in _encode_metadata(metadata).items():
            headers[_META_PREFIX + name] = value
        if crc32c:
            headers[_META_PREFIX + CRC32C_METADATA_KEY] = crc32c.lower()
        if if_absent:
            headers["If-None-Match"] = "*"
        if if_version is not None:
            headers["If-Match"] = _quote_etag(if_version)
        return headers

    def put(
        self,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        content_encoding: str | None = None,
        cache_control: str | None = None,
        if_absent: bool = False,
        if_version: str | None = None,
        expected_md5: str | None = None,
        expected_crc32c: str | None = None,
        size: int | None = None,
    ) -> ObjectInfo:
        """One Put Blob (buffered or streamed) or blocks; checksums verified before commit."""
        validate_key(key)
        if "\\" in key:
            # Azure stores a backslash as '/': the blob would land under another name.
            raise ValueError(f"invalid object key {key!r}: Azure Blob storage turns '\\' into '/'")
        if if_absent and if_version is not None:
            raise ValueError("put: pass either if_absent or if_version, not both")
        user_metadata = _check_metadata(metadata)
        common = {
            "content_type": content_type,
            "metadata": user_metadata,
            "content_encoding": content_encoding,
            "cache_control": cache_control,
            "if_absent": if_absent,
            "if_version": if_version,
        }
        data, rest = prefetch(body, self._buffer_max, size)
        if data is not None:
            # Put Blob checks a Content-MD5 over the bytes it receives and commits
            # nothing on a mismatch, so an expected MD5 goes to Azure to check;
            # the CRC32C is checked here.
            hasher = Hasher(md5=not expected_md5)
            hasher.update(data)
            if size is not None and size != len(data):
                raise IntegrityError(f"{key}: body has {len(data)} bytes, the declared size was {size}")
            hasher.check(key, expected_md5, expected_crc32c)
            md5 = expected_md5.lower() if expected_md5 else hasher.md5
            headers = self._put_headers(crc32c=hasher.crc32c, **common)
            headers.update(
                {
                    "x-ms-blob-type": "BlockBlob",
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "Content-MD5": _b64(bytes.fromhex(md5)),
                }
            )
            response = self._send("PUT", key, headers=headers, data=data, expect=(201,))
            return self._written(key, len(data), md5, hasher.crc32c, response.headers, **common)
        if size is not None and size <= self._single_max:
            return self._put_streamed(key, rest, size, expected_md5, expected_crc32c, common)
        return self._put_blocks(key, rest, size, expected_md5, expected_crc32c, common)

    def _put_streamed(
        self,
        key: str,
        chunks: Iterator[bytes],
        size: int,
        expected_md5: str | None,
        expected_crc32c: str | None,
        common: dict[str, Any],
    ) -> ObjectInfo:
        # As above: an expected MD5 is Azure's to check (Content-MD5), the CRC32C and size are ours.
        body = CheckedBody(chunks, key, expected_md5=expected_md5, expected_crc32c=expected_crc32c, size=size,
                           md5=not expected_md5)
        headers = self._put_headers(crc32c=expected_crc32c, **common)
        headers.update(
            {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream", "Content-Length": str(size)}
        )
        if expected_md5:
            headers["Content-MD5"] = _b64(bytes.fromhex(expected_md5))
        try:
            response = self._send("PUT", key, headers=headers, data=body, expect=(201,), retry=False)
        except BodyAborted:
            raise body.error from None  # type: ignore[misc]
        if not body.finished:
            raise TransientStorageError(f"{self.url}/{key}: the service answered before the whole body was sent")
        crc32c = expected_crc32c.lower() if expected_crc32c else None
        md5 = expected_md5.lower() if expected_md5 else body.hasher.md5
        return self._written(key, size, md5, crc32c, response.headers, **common)

    def _put_blocks(
        self,
        key: str,
        chunks: Iterator[bytes],
        size: int | None,
        expected_md5: str | None,
        expected_crc32c: str | None,
        common: dict[str, Any],
    ) -> ObjectInfo:
        hasher = Hasher()
        # Random per upload so concurrent uploads of one key never mix blocks;
        # Azure wants every block ID of a blob to have the same length.
        upload_id = uuid.uuid4().hex
        block_ids: list[str] = []
        for piece in regroup(chunks, self._block_size):
            hasher.update(piece)
            if size is not None and hasher.size > size:
                raise IntegrityError(f"{key}: body is longer than the declared size of {size} bytes")
            block_id = _b64(f"{upload_id}-{len(block_ids):08d}".encode())
            self._send(
                "PUT",
                key,
                query=f"comp=block&blockid={quote(block_id, safe='')}",
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(piece))},
                data=piece,
                expect=(201,),
            )
            block_ids.append(block_id)
        if size is not None and hasher.size != size:
            raise IntegrityError(f"{key}: body has {hasher.size} bytes, the declared size was {size}")
        # Nothing is committed yet: on a mismatch the staged blocks stay invisible
        # and Azure discards them after a week.
        hasher.check(key, expected_md5, expected_crc32c)
        listing = "".join(f"<Latest>{block_id}</Latest>" for block_id in block_ids)
        xml = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'.encode()
        headers = self._put_headers(crc32c=hasher.crc32c, **common)
        headers.update(
            {
                "x-ms-blob-content-md5": _b64(bytes.fromhex(hasher.md5)),
                "Content-Type": "application/xml",
                "Content-Length": str(len(xml)),
            }
        )
        response = self._send("PUT", key, query="comp=blocklist", headers=headers, data=xml, expect=(201,))
        return self._written(key, hasher.size, hasher.md5, hasher.crc32c, response.headers, **common)

    def _written(
        self,
        key: str,
        size: int,
        md5: str,
        crc32c: str | None,
        headers: Mapping[str, str],
        *,
        content_type: str | None,
        metadata: dict[str, str],
        content_encoding: str | None,
        cache_control: str | None,
        **_: Any,
    ) -> ObjectInfo:
        """The info of an object just written, from what was sent and the response headers."""
        modified = headers.get("Last-Modified")
        return ObjectInfo(
            key=key,
            size=size,
            content_type=content_type or "application/octet-stream",
            md5=md5,
            crc32c=crc32c,
            version=_quote_etag(headers["ETag"]),
            updated=parsedate_to_datetime(modified) if modified else None,
            metadata=dict(metadata),
            content_encoding=content_encoding,
            cache_control=cache_control,
        )

    def stream(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """One streaming Get Blob; memory bounded by ``chunk_size``."""
        validate_key(key)
        return self._stream(key, chunk_size)

    def _stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        response = self._send("GET", key, expect=(200,), stream=True)
        with released(response):
            try:
                # Stored bytes as they are: no gunzip of gzip-encoded blobs.
                yield from response.stream(chunk_size, decode_content=False)
            except HTTP_ERRORS as err:
                raise TransientStorageError(f"{self.url}/{key}: download interrupted ({type(err).__name__})") from err

    def head(self, key: str) -> ObjectInfo:
        """One Get Blob Properties request."""
        validate_key(key)
        response = self._send("HEAD", key, expect=(200,))
        return headers_info(key, response.headers)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """List Blobs with metadata (no per-object request), fanned out over the folders under ``prefix``.

        The level under ``prefix`` is listed with ``delimiter=/``; each folder
        it names (a ``BlobPrefix``) is replaced by that folder's own flat
        listing, up to ``list_fanout`` of them read in threads ahead of the
        consumer (``fan_out``), each at most two pages ahead. Keys come in
        the flat listing's order. Azurite builds a whole page before sending
        it and the client parses it as it arrives, so one listing leaves each
        side idle half the time; several folder listings overlap. A level
        without folders is the flat listing, page for page; one whose first
        page names more than ``FANOUT_MAX_FOLDERS`` folders is listed flat
        (one request more).
        """
        if self._fanout < 1:
            return self._flat(prefix)
        return self._fanned_out(prefix)

    def _flat(self, prefix: str) -> Iterator[ObjectInfo]:
        # One signed REST request per page, parsed with ElementTree: the SDK's generic XML
        # deserializer spent ~0.7 ms of client CPU per blob (1.4 s for a 2,000-blob no-op
        # sync on Azurite), ElementTree about a tenth of that.
        marker = ""
        while True:
            marker = yield from self._page(prefix, self._page_size, marker)
            if not marker:
                return

    def _flat_pages(self, prefix: str) -> Iterator[list[ObjectInfo]]:
        """The flat listing page by page, each page read whole before it is handed on."""
        marker = ""
        while True:
            page, marker = _collect(self._page(prefix, self._page_size, marker))
            yield page
            if not marker:
                return

    def _fanned_out(self, prefix: str) -> Iterator[ObjectInfo]:
        return by_folders(self._level_pages(prefix), lambda first: sum(isinstance(e, str) for e in first),
                          self._flat_pages, prefix, ahead=self._fanout, max_folders=FANOUT_MAX_FOLDERS,
                          name="spotshift-az-folder")

    def _level_pages(self, prefix: str) -> Iterator[list[ObjectInfo | str]]:
        """The level under ``prefix`` (``delimiter=/``) page by page: blobs and folder names, in the flat order."""
        marker, last_folder = "", None
        while True:
            entries, marker = _collect(self._page(prefix, self._page_size, marker, delimited=True))
            folders = [entry for entry in entries if isinstance(entry, str)]
            blobs = [entry for entry in entries if not isinstance(entry, str)] if folders else entries
            if folders and folders[0] == last_folder:
                folders.pop(0)  # named again after a page boundary: already listed whole
            if not folders or not blobs:
                yield folders or blobs  # type: ignore[misc]
            else:
                # Azurite sends a page's BlobPrefix elements before its Blob elements; Azure
                # documents the entries in alphabetical order, not how the two kinds mix.
                yield list(heapq.merge(folders, blobs, key=_service_order))
            if folders:
                last_folder = folders[-1]
            if not marker:
                return

    def list_page(self, prefix: str, limit: int, token: str | None = None) -> Page:
        """One List Blobs request of at most ``limit`` blobs; the token is Azure's ``NextMarker``."""
        if not 1 <= limit <= 5000:
            raise ValueError(f"limit must be between 1 and 5000, got {limit}")
        items, marker = _collect(self._page(prefix, limit, token or ""))
        return Page(items, marker or None)

    def _page(self, prefix: str, limit: int, marker: str, *, delimited: bool = False) -> Generator[Any, None, str]:
        """One List Blobs page's infos as the response arrives; returns its ``NextMarker`` ("" at the end).

        ``delimited`` lists with ``delimiter=/`` and yields each folder's name
        (``BlobPrefix``, ending in '/') among the infos. Parsed incrementally
        (a pull parser fed the body in chunks, each element dropped once
        read): a 5,000-blob page never sits in memory whole, as bytes or as a
        tree (about 28 MiB at its peak when it did).
        """
        params = {"restype": "container", "comp": "list", "include": "metadata", "maxresults": str(limit)}
        if prefix:
            params["prefix"] = prefix
        if delimited:
            params["delimiter"] = "/"
        if marker:
            params["marker"] = marker
        response = self._send("GET", "", query=urlencode(params, quote_via=quote), expect=(200,), stream=True)
        # End events only (the start events were a fifth of the client's CPU in a no-op
        # rerun). A <Blob> or <BlobPrefix> of the listing has a <Name>; a user metadata
        # entry of that name is text only. The last element to end is the root.
        parser = ElementTree.XMLPullParser(("end",))
        element = None
        with released(response):
            try:
                for chunk in response.stream(_LIST_CHUNK, decode_content=False):
                    parser.feed(chunk)
                    for _event, element in parser.read_events():
                        if element.tag in _LISTED and element.find("Name") is not None:  # EnumerationResults/Blobs/*
                            yield listing_info(element) if element.tag == "Blob" else _name(element)
                            element.clear()
                parser.close()
                for _event, element in parser.read_events():  # whatever ended only at the close
                    pass
            except ElementTree.ParseError as err:
                raise TransientStorageError(f"{self.url}: unreadable List Blobs response ({err})") from None
            except HTTP_ERRORS as err:
                raise TransientStorageError(f"{self.url}: listing interrupted ({type(err).__name__})") from err
        if element is None or element.tag != "EnumerationResults":
            raise TransientStorageError(f"{self.url}: unreadable List Blobs response (no EnumerationResults)")
        return element.findtext("NextMarker") or ""

    def delete(self, key: str, *, if_version: str | None = None, missing_ok: bool = True) -> None:
        """Delete Blob, with ``If-Match`` when ``if_version`` is given."""
        validate_key(key)
        headers = {"If-Match": _quote_etag(if_version)} if if_version is not None else None
        try:
            self._send("DELETE", key, headers=headers, expect=(202,))
        except ObjectNotFound:
            if if_version is not None:
                raise PreconditionFailed(f"{self.url}/{key}: precondition failed (blob is gone)") from None
            if missing_ok:
                return
            raise

    def ping(self) -> None:
        """List at most one blob: works with a container-scoped SAS or data-plane role alone."""
        try:
            next(iter(self._container.list_blobs(results_per_page=1)), None)
        except AzureError as err:
            raise self._translate(err, None, container_call=True) from err

    def close(self) -> None:
        """Drop this store's connections; close the client and credential if this store created them."""
        self._http.clear()
        for owned in reversed(self._owned):
            with contextlib.suppress(Exception):  # closing is best effort
                owned.close()
        self._owned.clear()


def _collect(pager: Generator[Any, None, str]) -> tuple[list[Any], str]:
    """A List Blobs page's entries and its ``NextMarker``."""
    entries: list[Any] = []
    while True:
        try:
            entries.append(next(pager))
        except StopIteration as end:
            return entries, end.value


def _error_message(response: urllib3.BaseHTTPResponse) -> str:
    """The ``<Message>`` of an error response (a small XML document), or ""."""
    try:
        body = response.data
        found = re.search(rb"<Message>(.*?)</Message>", body or b"", re.S)
    except (urllib3.exceptions.HTTPError, OSError):
        return ""
    return found.group(1).decode(errors="replace") if found else ""


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Finish with an error response so its connection can go back to the pool."""
    try:
        response.drain_conn()
    finally:
        response.release_conn()
