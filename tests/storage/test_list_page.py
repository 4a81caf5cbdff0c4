"""``list_page``: one bounded page of a listing and a token for the next, on every backend."""

from __future__ import annotations

import pytest

from app.storage import ObjectStore

pytestmark = pytest.mark.emulator


def test_pages_walk_the_prefix_in_key_order_and_end_with_no_token(store: ObjectStore) -> None:
    keys = [f"p/{name}" for name in ("a", "b", "c", "d", "e")]
    for key in [*keys, "other/x", "q"]:
        store.put(key, b"1", metadata={"tag": key[-1]})

    seen, token, pages = [], None, 0
    while True:
        page = store.list_page("p/", 2, token)
        assert len(page.items) <= 2
        seen += page.items
        pages += 1
        if page.token is None:
            break
        token = page.token

    assert [info.key for info in seen] == keys
    assert [info.metadata.get("tag") for info in seen] == list("abcde")
    assert pages in (3, 4)  # a backend may answer one empty last page


def test_a_page_of_an_empty_prefix_is_empty_with_no_token(store: ObjectStore) -> None:
    store.put("elsewhere", b"1")

    page = store.list_page("none/", 10)

    assert page.items == [] and page.token is None


def test_a_page_size_below_one_is_refused(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.list_page("", 0)
