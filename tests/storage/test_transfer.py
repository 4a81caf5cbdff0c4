"""The upload helpers: prefetching small bodies and verifying checksums before the last bytes leave."""

from __future__ import annotations

import hashlib
import io

import google_crc32c
import pytest

from app.storage import IntegrityError, ObjectNotFound
from app.storage._transfer import BodyAborted, CheckedBody, prefetch, regroup


def md5_hex(data: bytes) -> str:
    """Lowercase hex MD5."""
    return hashlib.md5(data).hexdigest()


def test_prefetch_buffers_small_bodies_of_any_form() -> None:
    for body in (b"abc", io.BytesIO(b"abc"), iter([b"a", b"bc"])):
        data, rest = prefetch(body, limit=10, size=None)

        assert data == b"abc"
        assert list(rest) == []


def test_prefetch_streams_large_bodies_from_the_start() -> None:
    chunks = [b"x" * 4, b"y" * 4, b"z" * 4]

    data, rest = prefetch(iter(chunks), limit=6, size=None)

    assert data is None
    assert b"".join(rest) == b"".join(chunks)


def test_prefetch_never_reads_a_body_known_to_be_large() -> None:
    source = io.BytesIO(b"0123456789")

    data, _ = prefetch(source, limit=4, size=10)

    assert data is None
    assert source.tell() == 0


def test_checked_body_holds_back_the_last_chunk_until_verified() -> None:
    chunks = [b"aa", b"bb", b"cc"]
    body = CheckedBody(iter(chunks), "k", expected_md5=md5_hex(b"wrong"))
    sent: list[bytes] = []

    with pytest.raises(BodyAborted):
        for chunk in body:
            sent.append(chunk)

    assert sent == [b"aa", b"bb"]
    assert isinstance(body.error, IntegrityError)


def test_checked_body_passes_everything_when_checksums_match() -> None:
    data = b"aabbcc"
    crc = google_crc32c.Checksum(data).digest().hex()
    body = CheckedBody(iter([b"aa", b"bb", b"cc"]), "k", expected_md5=md5_hex(data), expected_crc32c=crc, size=6)

    assert b"".join(body) == data
    assert len(body) == 6
    assert body.finished
    assert body.hasher.md5 == md5_hex(data)


@pytest.mark.parametrize("declared", [5, 7])
def test_checked_body_rejects_a_wrong_size(declared: int) -> None:
    body = CheckedBody(iter([b"aaa", b"bbb"]), "k", size=declared)

    with pytest.raises(BodyAborted):
        list(body)

    assert isinstance(body.error, IntegrityError)


def test_checked_body_keeps_the_source_error() -> None:
    def source():
        yield b"aa"
        raise ObjectNotFound("gs://src/k: not found")

    body = CheckedBody(source(), "k")

    with pytest.raises(BodyAborted):
        list(body)

    assert isinstance(body.error, ObjectNotFound)


def test_checked_body_read_verifies_before_returning_the_final_bytes() -> None:
    body = CheckedBody(iter([b"abcd", b"efgh", b"ij"]), "k", expected_md5=md5_hex(b"nope"))

    returned = [body.read(4), body.read(4)]
    with pytest.raises(BodyAborted):
        body.read(4)  # would return the final "ij": the source has ended, so it checks first

    assert returned == [b"abcd", b"efgh"]
    assert body.tell() == 8
    assert isinstance(body.error, IntegrityError)


def test_checked_body_read_returns_everything_in_order() -> None:
    data = b"abcdefghij"
    body = CheckedBody(iter([b"abc", b"defg", b"hij"]), "k", expected_md5=md5_hex(data))

    pieces = [body.read(4), body.read(4), body.read(4), body.read(4)]

    assert pieces == [b"abcd", b"efgh", b"ij", b""]
    assert body.tell() == len(data)
    assert body.finished


def test_regroup_cuts_exact_pieces() -> None:
    pieces = list(regroup(iter([b"abc", b"defgh", b"", b"ij"]), 4))

    assert pieces == [b"abcd", b"efgh", b"ij"]


def test_prefetch_hands_on_plain_bytes_whatever_the_source_yields() -> None:
    chunks = [bytearray(b"ab"), memoryview(b"cd"), b"ef"]

    data, rest = prefetch(iter(chunks), limit=3, size=None)
    small, _ = prefetch(iter([bytearray(b"ab"), memoryview(b"c")]), limit=3, size=None)

    assert data is None
    assert [type(chunk) for chunk in rest] == [bytes, bytes, bytes]
    assert small == b"abc"
