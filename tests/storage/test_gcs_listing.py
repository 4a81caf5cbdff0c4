"""GcsStore.list fanned out over the folders of a level: the flat listing's keys, in its order."""

from __future__ import annotations

import pytest

from app.storage import gcs as gcs_module
from app.storage.emulators import FakeGcsServer
from app.storage.gcs import GcsStore
from tests.storage.test_azure_listing import KEYS

pytestmark = pytest.mark.emulator


@pytest.fixture
def seeded(fake_gcs: FakeGcsServer, gcs_bucket: str) -> GcsStore:
    """A bucket holding the Azure listing test's keys (folders next to objects, nested, non-ASCII)."""
    store = GcsStore(gcs_bucket, project=fake_gcs.project)
    for key in KEYS:
        store.put(key, key.encode(), metadata={"k": "v"})
    yield store
    store.close()


def flat(store: GcsStore, prefix: str) -> list:
    return [info for page in store._flat_pages(prefix) for info in page]


@pytest.mark.parametrize("page_size", [1, 2, 3, 1000])
@pytest.mark.parametrize("fanout", [1, 4])
def test_fanned_out_listing_yields_the_flat_listing_key_for_key(seeded, monkeypatch, page_size, fanout):
    monkeypatch.setattr(gcs_module, "LIST_PAGE_SIZE", page_size)
    monkeypatch.setattr(gcs_module, "LIST_FANOUT", fanout)

    for prefix in ("", "a", "a/", "a/b/", "many", "many/", "\U0001F601", "nothing/"):
        expected = flat(seeded, prefix)
        got = list(seeded.list(prefix))

        assert [i.key for i in got] == [i.key for i in expected], f"prefix {prefix!r}"
        assert got == expected, f"prefix {prefix!r}: same keys, other infos"
    assert [i.key for i in flat(seeded, "")] == sorted(KEYS), "fake-gcs-server lists by code point"


@pytest.mark.parametrize("page_size", [1, 1000])
def test_a_level_with_more_folders_than_the_limit_is_listed_flat(seeded, monkeypatch, page_size):
    monkeypatch.setattr(gcs_module, "LIST_PAGE_SIZE", page_size)
    monkeypatch.setattr(gcs_module, "FANOUT_MAX_FOLDERS", 2)
    folder_listings = []
    flat_pages = seeded._flat_pages
    monkeypatch.setattr(seeded, "_flat_pages", lambda prefix: folder_listings.append(prefix) or flat_pages(prefix))

    got = [info.key for info in seeded.list()]

    assert got == sorted(KEYS) and folder_listings == [""], "one flat listing, no folder by folder"


def test_a_folder_named_late_is_still_listed_and_one_named_twice_once(seeded, monkeypatch):
    real_pages = seeded._pages

    def shuffled(prefix, delimited):
        pages = list(real_pages(prefix, delimited))
        if delimited:  # every folder named again on the last page, "a/" only there
            for page in pages[:-1]:
                page.prefixes = tuple(p for p in page.prefixes if p != "a/")
            pages[-1].prefixes = (*pages[-1].prefixes, *{p for page in pages for p in page.prefixes}, "a/")
        return iter(pages)

    monkeypatch.setattr(gcs_module, "LIST_PAGE_SIZE", 1)
    monkeypatch.setattr(seeded, "_pages", shuffled)

    got = [info.key for info in seeded.list()]

    assert sorted(got) == sorted(KEYS) and len(got) == len(KEYS), "nothing lost, nothing twice"
