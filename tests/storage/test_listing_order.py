"""What order each backend lists keys in, on the emulators, with keys chosen to expose any difference.

Python compares strings by code point, which equals UTF-8 byte order. The
keys below separate that from UTF-16 code unit order (supplementary
characters such as emoji are surrogate pairs, 0xD800-0xDFFF, which sort
before U+E000-U+FFFF in UTF-16 but after them by code point), from a
directory walk in name order ('-' and '.' sort before '/', '0' after it),
from case-insensitive order, and from Unicode normalisation (a precomposed
'é' and 'e' + combining acute stay two keys, each in its own place).
"""

from __future__ import annotations

import pytest

from app.storage import ObjectStore

KEYS = [
    "a-b", "a.b", "a/b", "a0", "A", "Z", "_x", "~x", "a b", "a+b",
    "\u00e9", "e\u0301", "\u00ff", "\u0100", "\u03a9", "\u65e5\u672c",
    "\ue000", "\ufb01", "\uff01", "\U0001F600", "\U0001F600x", "\U0001F601/y", "z",
]


def code_point_order(keys: list[str]) -> list[str]:
    return sorted(keys)


def utf16_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-16-be"))


def test_the_keys_tell_the_orders_apart():
    assert code_point_order(KEYS) != utf16_order(KEYS)
    assert code_point_order(KEYS) == sorted(KEYS, key=lambda k: k.encode("utf-8"))
    assert code_point_order(KEYS) != sorted(KEYS, key=str.lower)


@pytest.mark.parametrize(("backend", "expected"), [
    ("local", code_point_order),
    ("gcs", code_point_order),
    ("azure", utf16_order),
])
def test_backend_lists_in_its_documented_order(request: pytest.FixtureRequest, backend: str, expected) -> None:
    store: ObjectStore = request.getfixturevalue(f"{backend}_store")
    for key in KEYS:
        store.put(key, key.encode())

    listed = [info.key for info in store.list()]

    assert listed == expected(KEYS), f"{backend} lists in another order than assumed"
    assert [info.key for info in store.list("a")] == [k for k in expected(KEYS) if k.startswith("a")]
