"""infra/images.py: the ACR token exchange the registry component uses to push."""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request

from infra.images import exchange_acr_refresh_token


class FakeResponse(io.BytesIO):
    """A urlopen() result usable as a context manager."""

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_exchange_posts_the_entra_token_and_returns_the_refresh_token():
    seen: list[urllib.request.Request] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> FakeResponse:
        seen.append(request)
        return FakeResponse(json.dumps({"refresh_token": "acr-refresh"}).encode())

    token = exchange_acr_refresh_token("acme.azurecr.io", "tenant-1", "entra-token", urlopen=urlopen)

    assert token == "acr-refresh"
    (request,) = seen
    assert request.full_url == "https://acme.azurecr.io/oauth2/exchange"
    assert request.get_method() == "POST"
    assert urllib.parse.parse_qs(request.data.decode()) == {
        "grant_type": ["access_token"],
        "service": ["acme.azurecr.io"],
        "tenant": ["tenant-1"],
        "access_token": ["entra-token"],
    }
