"""AzureBlobStore.list fanned out over the folders of a level: the flat listing's keys, in its order."""

from __future__ import annotations

import collections
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from app.storage import TransientStorageError
from app.storage import azure as azure_module
from app.storage import base
from app.storage.azure import AzureBlobStore
from app.storage.emulators import Azurite
from migration.merge import listing
from migration.rules import RetryPolicy
from tests.storage.stub_http import Reply, StubServer
from tests.storage.test_azure import stub_store
from tests.storage.test_listing_order import KEYS as ORDER_KEYS
from tests.storage.test_listing_order import utf16_order

pytestmark = pytest.mark.emulator

#: Top-level blobs next to folders ('-' and '.' sort before '/', '0' after it), nested folders,
#: a folder longer than a page, and the keys that tell code point from UTF-16 order apart.
KEYS = sorted(set(ORDER_KEYS) | {
    "a-b", "a.b", "a/x", "a/b/c", "a/b/d/e", "a0",
    *(f"many/{i:02d}" for i in range(7)), "many0", "many.x",
    "\U0001F601/z", "\U0001F601\ue000", "\ue000/q", "\uff01/r",
})


def store_for(azurite: Azurite, container: str, **options: int) -> AzureBlobStore:
    """An AzureBlobStore on ``container`` with the given listing options."""
    return AzureBlobStore(container, connection_string=azurite.connection_string, **options)


@pytest.fixture
def seeded(azurite: Azurite, azure_container: str) -> str:
    """A container holding ``KEYS``, each blob's body its own name."""
    store = store_for(azurite, azure_container)
    for key in KEYS:
        store.put(key, key.encode(), metadata={"k": "v"})
    store.close()
    return azure_container


@pytest.mark.parametrize("page_size", [1, 2, 3, 5000])
@pytest.mark.parametrize("fanout", [1, 2, 4])
def test_fanned_out_listing_yields_the_flat_listing_key_for_key(azurite: Azurite, seeded: str, page_size: int,
                                                                 fanout: int) -> None:
    flat = store_for(azurite, seeded, list_fanout=0)
    fanned = store_for(azurite, seeded, list_page_size=page_size, list_fanout=fanout)

    for prefix in ("", "a", "a/", "a/b/", "many", "many/", "\U0001F601", "nothing/"):
        expected = list(flat.list(prefix))
        got = list(fanned.list(prefix))

        assert [i.key for i in got] == [i.key for i in expected], f"prefix {prefix!r}"
        assert got == expected, f"prefix {prefix!r}: same keys, other infos"
    assert [i.key for i in flat.list()] == utf16_order(KEYS), "the flat listing itself is not in Azurite's order"


def counting(store: AzureBlobStore) -> list[str]:
    """Record the query of every List Blobs request ``store`` sends."""
    queries: list[str] = []
    send = store._send

    def recording(method: str, key: str, *, query: str = "", **kwargs):
        if "comp=list" in query:
            queries.append(query)
        return send(method, key, query=query, **kwargs)

    store._send = recording  # type: ignore[method-assign]
    return queries


def test_a_container_without_folders_costs_the_flat_listings_requests(azurite: Azurite, azure_container: str) -> None:
    writer = store_for(azurite, azure_container)
    for i in range(7):
        writer.put(f"k{i}", b"x")
    flat = store_for(azurite, azure_container, list_page_size=3, list_fanout=0)
    fanned = store_for(azurite, azure_container, list_page_size=3)
    flat_requests, fanned_requests = counting(flat), counting(fanned)

    assert [i.key for i in fanned.list()] == [i.key for i in flat.list()] == [f"k{i}" for i in range(7)]

    assert len(fanned_requests) == len(flat_requests) == 3
    assert all("delimiter" in query for query in fanned_requests)


@pytest.mark.parametrize(("folders", "fanned_out"), [(3, True), (4, False)])
def test_a_level_with_more_folders_than_the_limit_is_listed_flat(azurite: Azurite, azure_container: str,
                                                                 monkeypatch: pytest.MonkeyPatch, folders: int,
                                                                 fanned_out: bool) -> None:
    monkeypatch.setattr(azure_module, "FANOUT_MAX_FOLDERS", 3)
    writer = store_for(azurite, azure_container)
    keys = sorted(f"f{folder}/{i}" for folder in range(folders) for i in range(2)) + ["top"]
    for key in keys:
        writer.put(key, b"x")
    fanned = store_for(azurite, azure_container)
    queries = counting(fanned)

    listed = [info.key for info in fanned.list()]

    assert listed == keys
    folder_requests = [q for q in queries if "delimiter" not in q]
    if fanned_out:
        assert len(queries) == 1 + folders and all("prefix=f" in q for q in folder_requests)
    else:
        assert len(queries) == 2 and folder_requests and "prefix" not in folder_requests[0], queries


def folder_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "spotshift-az-folder")


def test_folder_listings_read_a_bounded_way_ahead_and_stop_when_the_consumer_leaves(
        azurite: Azurite, azure_container: str) -> None:
    writer = store_for(azurite, azure_container)
    for folder in range(6):
        for i in range(8):
            writer.put(f"f{folder}/{i}", b"x")
    fanned = store_for(azurite, azure_container, list_page_size=1, list_fanout=4)
    queries = counting(fanned)

    def per_folder() -> collections.Counter[str]:
        return collections.Counter(parse_qs(q)["prefix"][0] for q in list(queries) if "delimiter" not in q)

    listed = fanned.list()
    first = next(listed)
    deadline = time.monotonic() + 10
    while len(per_folder()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # give the folder threads the chance to overrun, if they could
    ahead = per_folder()
    listed.close()
    while folder_threads() and time.monotonic() < deadline + 5:
        time.sleep(0.05)

    assert first.key == "f0/0"
    assert sorted(ahead) == ["f0/", "f1/", "f2/", "f3/", "f4/"], "not the next four folders listed ahead"
    # A page handed over and one more in hand (the first folder: plus the page being consumed).
    limit = base.FOLDER_PAGES_AHEAD + 1
    assert ahead["f0/"] <= limit + 1 and max(ahead[f"f{i}/"] for i in range(1, 5)) <= limit, ahead
    assert folder_threads() == 0, "a folder listing kept running after its consumer left"


def blob_xml(key: str) -> str:
    return (f"<Blob><Name>{key}</Name><Properties><Content-Length>1</Content-Length>"
            f"<Etag>0x1</Etag></Properties></Blob>")


def listing_xml(entries: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>{entries}</Blobs>'
            f"<NextMarker/></EnumerationResults>").encode()


class FlakyFolders:
    """List Blobs answers: folders a/, b/, c/ (two blobs each), a top-level blob 'd'; b/ fails ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def __call__(self, method: str, path: str) -> Reply:
        query = parse_qs(urlsplit(path).query)
        headers = {"Content-Type": "application/xml"}
        if "delimiter" in query:
            # Blobs after prefixes, as Azure's documentation shows them.
            entries = blob_xml("d") + "".join(f"<BlobPrefix><Name>{p}</Name></BlobPrefix>" for p in "a/ b/ c/".split())
            return Reply(200, headers, listing_xml(entries))
        prefix = query["prefix"][0]
        if prefix == "b/" and self.failures > 0:
            self.failures -= 1
            return Reply(503, {"x-ms-error-code": "ServerBusy"})
        return Reply(200, headers, listing_xml(blob_xml(f"{prefix}1") + blob_xml(f"{prefix}2")))


def test_a_folder_listing_error_reaches_the_consumer_where_its_keys_would_come() -> None:
    with StubServer(FlakyFolders(failures=1)) as server:
        store = stub_store(server)
        got: list[str] = []

        with pytest.raises(TransientStorageError):
            for info in store.list():
                got.append(info.key)

    assert got == ["a/1", "a/2"]


def test_the_migration_listing_recovers_from_a_folder_error_without_repeating_keys() -> None:
    with StubServer(FlakyFolders(failures=1)) as server:
        store = stub_store(server)

        keys = [info.key for info in listing(store, "", RetryPolicy(attempts=3, base_delay=0.01))]

    assert keys == ["a/1", "a/2", "b/1", "b/2", "c/1", "c/2", "d"]


def test_a_folder_named_again_on_the_next_page_is_listed_once() -> None:
    def router(method: str, path: str) -> Reply:
        query = parse_qs(urlsplit(path).query)
        headers = {"Content-Type": "application/xml"}
        if "delimiter" in query and "marker" not in query:
            body = listing_xml("<BlobPrefix><Name>a/</Name></BlobPrefix>").replace(
                b"<NextMarker/>", b"<NextMarker>m1</NextMarker>")
            return Reply(200, headers, body)
        if "delimiter" in query:
            entries = "".join(f"<BlobPrefix><Name>{p}</Name></BlobPrefix>" for p in ("a/", "b/")) + blob_xml("c")
            return Reply(200, headers, listing_xml(entries))
        prefix = query["prefix"][0]
        return Reply(200, headers, listing_xml(blob_xml(f"{prefix}1") + blob_xml(f"{prefix}2")))

    with StubServer(router) as server:
        keys = [info.key for info in stub_store(server).list()]

    assert keys == ["a/1", "a/2", "b/1", "b/2", "c"]


def test_list_page_size_outside_azures_range_is_a_config_error(azurite: Azurite) -> None:
    from app.storage import StorageConfigError

    with pytest.raises(StorageConfigError, match="list_page_size"):
        store_for(azurite, "any", list_page_size=5001)


@pytest.mark.parametrize("page_size", [1, 5000])
def test_user_metadata_named_like_listing_elements_is_metadata_not_structure(azurite: Azurite, azure_container: str,
                                                                            page_size: int) -> None:
    # The listing is parsed from end events alone: a <Blob>, <BlobPrefix> or <NextMarker> inside
    # <Metadata> must not be taken for a blob, a folder or the next page's marker.
    tricky = {"Blob": "b", "BlobPrefix": "p/", "NextMarker": "zzz", "Name": "n", "EnumerationResults": "e"}
    writer = store_for(azurite, azure_container)
    keys = ["a/1", "a/2", "b", "c/d/3"]
    for key in keys:
        writer.put(key, key.encode(), metadata=tricky)

    for fanout in (0, 4):
        store = store_for(azurite, azure_container, list_page_size=page_size, list_fanout=fanout)
        listed = list(store.list())
        assert [info.key for info in listed] == keys
        assert all(info.metadata == tricky for info in listed)
        pages, token = [], None
        while True:
            page = store.list_page("", min(page_size, 2), token)
            pages.append([info.key for info in page.items])
            if page.token is None:
                break
            token = page.token
        assert [key for page in pages for key in page] == keys
