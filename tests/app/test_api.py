"""The HTTP API over TestClient: every status code, with real and hostile uploads."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import create_app
from app.queue import Queue
from app.settings import Settings
from app.storage import LocalStore
from app.worker import Worker

from .conftest import REPO_ROOT, DownStore
from .images import bomb_png, encode, jpeg_bytes, png_bytes, truncated_png


def upload(client: TestClient, data: bytes, filename: str = "cat.png", content_type: str = "image/png") -> Any:
    return client.post("/jobs", files={"file": (filename, data, content_type)})


def test_png_upload_is_queued_with_links(client: TestClient, local_store: LocalStore) -> None:
    response = upload(client, png_bytes((64, 48)))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["filename"] == "cat.png"
    base = f"/jobs/{body['id']}"
    assert body["links"] == {
        "self": base,
        "result": f"{base}/result",
        "page": f"{base}/page",
        "input_thumbnail": f"{base}/thumbnails/input",
        "result_thumbnail": f"{base}/thumbnails/result",
    }
    assert response.headers["location"] == f"/jobs/{body['id']}"
    assert local_store.exists(f"queue/{body['id']}")


def test_jpeg_upload_is_stored_with_its_detected_type(client: TestClient, local_store: LocalStore) -> None:
    response = upload(client, jpeg_bytes(), filename="photo.png", content_type="application/octet-stream")

    body = response.json()
    assert response.status_code == 202
    assert body["content_type"] == "image/jpeg"
    assert local_store.head(f"uploads/{body['id']}/photo.png").content_type == "image/jpeg"


def test_job_status_and_result_follow_the_worker(
    client: TestClient, local_store: LocalStore, settings: Settings
) -> None:
    job_id = upload(client, jpeg_bytes((80, 60)), filename="photo.jpg", content_type="image/jpeg").json()["id"]
    before = client.get(f"/jobs/{job_id}/result")

    Worker(local_store, settings).run(until_empty=True)
    status = client.get(f"/jobs/{job_id}")
    result = client.get(f"/jobs/{job_id}/result")

    assert (before.status_code, before.json()["detail"]) == (409, "job not done")
    assert status.status_code == 200 and status.json()["status"] == "done"
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(result.content))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (80, 60))


def test_result_of_a_failed_job_is_409(client: TestClient, local_store: LocalStore, settings: Settings) -> None:
    queue = Queue.from_settings(local_store, settings)
    job = queue.submit(b"slipped past the API", "x.png", "image/png")
    Worker(local_store, settings).run(until_empty=True)

    response = client.get(f"/jobs/{job['id']}/result")

    assert (response.status_code, response.json()["detail"]) == (409, "job failed")
    assert client.get(f"/jobs/{job['id']}").json()["error"].startswith("invalid image")


def test_job_list_shows_recent_jobs_newest_first(client: TestClient) -> None:
    ids = [upload(client, png_bytes(), filename=f"{n}.png").json()["id"] for n in range(3)]

    response = client.get("/jobs", params={"limit": 2})

    assert response.status_code == 200
    assert [job["id"] for job in response.json()["jobs"]] == ids[::-1][:2]


@pytest.mark.parametrize("path", ["/jobs/not-a-job", "/jobs/" + "A" * 32, "/jobs/" + "0" * 31 + "/result"])
def test_malformed_job_id_is_422(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert (response.status_code, response.json()["detail"]) == (422, "malformed job id")


@pytest.mark.parametrize("path", ["/jobs/" + "0" * 32, "/jobs/" + "0" * 32 + "/result"])
def test_unknown_job_is_404(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert (response.status_code, response.json()["detail"]) == (404, "job not found")


@pytest.mark.parametrize(
    ("data", "filename"),
    [(truncated_png(), "cut.png"), (b"hello, I am text\n", "notes.png"), (b"", "empty.png")],
    ids=["truncated-png", "text-named-png", "empty"],
)
def test_non_images_are_415(client: TestClient, local_store: LocalStore, data: bytes, filename: str) -> None:
    response = upload(client, data, filename=filename)

    assert (response.status_code, response.json()["detail"]) == (415, "not an image")
    assert list(local_store.list()) == []


def test_decompression_bomb_is_413(client: TestClient, local_store: LocalStore) -> None:
    response = upload(client, bomb_png(), filename="bomb.png")

    assert (response.status_code, response.json()["detail"]) == (413, "image too large")
    assert list(local_store.list()) == []


def test_oversize_upload_is_413_from_content_length(client_for: Callable[..., TestClient]) -> None:
    client = client_for(MAX_UPLOAD_BYTES=1024)

    response = upload(client, png_bytes() + b"\0" * 200_000)

    assert (response.status_code, response.json()["detail"]) == (413, "upload too large")


def test_oversize_upload_without_content_length_is_cut_off_while_reading(
    settings: Settings, local_store: LocalStore
) -> None:
    # Straight ASGI, because TestClient buffers the whole body before the app sees it.
    app = create_app(settings.model_copy(update={"MAX_UPLOAD_BYTES": 1024}), store=local_store)
    chunks_read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        if chunks_read == 1:
            part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
            return {"type": "http.request", "body": part, "more_body": True}
        return {"type": "http.request", "body": b"\0" * 8192, "more_body": chunks_read < 10_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=XyZ")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }

    asyncio.run(app(scope, receive, send))

    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["detail"] == "upload too large"
    assert chunks_read < 100, "stopped reading soon after the limit"


def test_file_over_the_limit_but_within_multipart_slack_is_413(client_for: Callable[..., TestClient]) -> None:
    client = client_for(MAX_UPLOAD_BYTES=1024)

    response = upload(client, png_bytes() + b"\0" * 4096)

    assert (response.status_code, response.json()["detail"]) == (413, "upload too large")


def test_upload_without_file_field_is_422(client: TestClient) -> None:
    response = client.post("/jobs", data={"picture": "nope"}, files={"other": ("a.png", png_bytes(), "image/png")})

    assert (response.status_code, response.json()["detail"]) == (422, "missing file field")


def test_non_multipart_upload_is_415(client: TestClient) -> None:
    response = client.post("/jobs", content=png_bytes(), headers={"content-type": "image/png"})

    assert (response.status_code, response.json()["detail"]) == (415, "expected multipart/form-data")


def test_malformed_multipart_body_is_400(client: TestClient) -> None:
    response = client.post("/jobs", content=b"garbage", headers={"content-type": "multipart/form-data"})

    assert (response.status_code, response.json()["detail"]) == (400, "malformed multipart body")


def test_read_only_refuses_writes_with_retry_after_and_keeps_reads(
    client_for: Callable[..., TestClient], local_store: LocalStore, settings: Settings
) -> None:
    job = Queue.from_settings(local_store, settings).submit(png_bytes(), "old.png", "image/png")
    client = client_for(READ_ONLY=True)

    write = upload(client, png_bytes())
    form = client.post("/upload", files={"file": ("a.png", png_bytes(), "image/png")})

    assert (write.status_code, write.json()["detail"]) == (503, "read-only")
    assert int(write.headers["retry-after"]) > 0
    assert form.status_code == 503 and "read-only" in form.text
    assert client.get(f"/jobs/{job['id']}").status_code == 200
    assert client.get("/jobs").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready", "read_only": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/jobs"), ("GET", "/jobs/" + "0" * 32), ("GET", "/jobs/" + "0" * 32 + "/result"), ("GET", "/")],
)
def test_storage_down_is_503(client_for: Callable[..., TestClient], method: str, path: str) -> None:
    client = client_for(store=DownStore())

    response = client.request(method, path)

    assert (response.status_code, response.json()["detail"]) == (503, "storage unavailable")


def test_upload_with_storage_down_is_503(client_for: Callable[..., TestClient]) -> None:
    client = client_for(store=DownStore())

    response = upload(client, png_bytes())

    assert (response.status_code, response.json()["detail"]) == (503, "storage unavailable")


def test_removed_local_store_makes_readyz_and_reads_503(client: TestClient, local_store: LocalStore) -> None:
    assert client.get("/readyz").status_code == 200
    shutil.rmtree(local_store.root)

    ready = client.get("/readyz")
    jobs = client.get("/jobs")

    assert (ready.status_code, ready.json()["detail"]) == (503, "storage unavailable")
    assert jobs.status_code == 503


def test_healthz_answers_even_with_storage_down(client_for: Callable[..., TestClient]) -> None:
    response = client_for(store=DownStore()).get("/healthz")

    assert (response.status_code, response.json()["status"]) == (200, "ok")


def test_metrics_count_uploads_jobs_and_latency(client: TestClient) -> None:
    upload(client, png_bytes())
    upload(client, b"text")
    client.get("/jobs/" + "0" * 32)

    text = client.get("/metrics").text

    assert "spotshift_uploads_total 1.0" in text
    assert 'spotshift_uploads_rejected_total{reason="415"} 1.0' in text
    assert 'spotshift_jobs{status="queued"} 1.0' in text
    assert "spotshift_storage_up 1.0" in text
    assert 'route="/jobs/{job_id}",status="404"' in text


def test_metrics_report_storage_down_instead_of_failing(client_for: Callable[..., TestClient]) -> None:
    response = client_for(store=DownStore()).get("/metrics")

    assert response.status_code == 200
    assert "spotshift_storage_up 0.0" in response.text


def test_upload_page_has_a_plain_multipart_form_and_escaped_recent_jobs(client: TestClient) -> None:
    upload(client, png_bytes(), filename="<script>alert(1)</script>.png")

    page = client.get("/")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'enctype="multipart/form-data"' in page.text and 'name="file"' in page.text
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page.text


def test_form_upload_redirects_back_to_the_page(client: TestClient) -> None:
    response = client.post("/upload", files={"file": ("a.png", png_bytes(), "image/png")}, follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"].startswith("/?submitted=")


def test_refused_form_upload_shows_the_reason_on_the_page(client: TestClient) -> None:
    response = client.post("/upload", files={"file": ("a.png", b"text", "image/png")})

    assert response.status_code == 415
    assert "Upload refused: not an image" in response.text


def test_a_damaged_job_document_is_reported_without_breaking_the_listings(
    client: TestClient, local_store: LocalStore
) -> None:
    damaged = upload(client, png_bytes()).json()["id"]
    healthy = upload(client, png_bytes()).json()["id"]
    local_store.put_json(f"jobs/{damaged}.json", {"attempts": None})

    one = client.get(f"/jobs/{damaged}")
    listing = client.get("/jobs")
    page = client.get("/")

    assert (one.status_code, one.json()["detail"]) == (500, "job document unreadable")
    assert listing.status_code == 200 and [job["id"] for job in listing.json()["jobs"]] == [healthy]
    assert page.status_code == 200 and healthy[:8] in page.text


def _truncated(fmt: str) -> bytes:
    data = encode(Image.effect_noise((128, 128), 60).convert("RGB"), fmt)
    return data[: len(data) * 3 // 4]


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF", "GIF", "WEBP"])
def test_truncated_images_are_415_at_upload(client: TestClient, local_store: LocalStore, fmt: str) -> None:
    response = upload(client, _truncated(fmt), filename=f"cut.{fmt.lower()}")

    assert (response.status_code, response.json()["detail"]) == (415, "not an image")
    assert list(local_store.list()) == []


def test_large_truncated_non_jpeg_is_left_to_the_worker(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.api.previews.UPLOAD_DECODE_PIXELS", 100)

    bmp = upload(client, _truncated("BMP"), filename="big.bmp")
    jpeg = upload(client, _truncated("JPEG"), filename="big.jpg")
    png = upload(client, _truncated("PNG"), filename="big.png")

    assert bmp.status_code == 202, "over the decode budget only the structure is checked"
    assert jpeg.status_code == 415, "JPEG is decoded at 1/8 scale whatever its size"
    assert png.status_code == 415, "verify() reads every PNG chunk to the end"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/jobs/0", 422),
        ("GET", "/jobs/" + "0" * 32 + "/result", 404),
        ("GET", "/jobs?limit=0", 422),
        ("GET", "/jobs/" + "0" * 32 + "/thumbnails/sideways", 422),
        ("GET", "/nowhere", 404),
        ("DELETE", "/jobs", 405),
        ("POST", "/jobs", 415),
    ],
)
def test_every_error_has_the_one_documented_body(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)

    assert response.status_code == status
    assert set(response.json()) == {"detail", "errors"} and isinstance(response.json()["detail"], str)


def test_validation_errors_name_each_field(client: TestClient) -> None:
    response = client.get("/jobs", params={"limit": "many"})

    assert response.json()["detail"] == "invalid limit"
    assert [problem["field"] for problem in response.json()["errors"]] == ["query.limit"]


def test_405_allows_every_method_the_path_serves(client: TestClient) -> None:
    response = client.options("/jobs")

    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


def test_extra_form_fields_are_422_however_many(client: TestClient) -> None:
    fields = {f"extra{n}": "x" for n in range(12)}

    few = client.post("/jobs", data={"note": "x"}, files={"file": ("a.png", png_bytes(), "image/png")})
    many = client.post("/jobs", data=fields, files={"file": ("a.png", png_bytes(), "image/png")})

    assert (few.status_code, few.json()["detail"]) == (422, "unexpected form field")
    assert (many.status_code, many.json()["detail"]) == (422, "unexpected form field")


def test_openapi_documents_every_status_with_the_error_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]

    assert set(paths["/jobs"]["post"]["responses"]) == {"202", "400", "413", "415", "422", "503"}
    assert set(paths["/jobs/{job_id}/result"]["get"]["responses"]) == {"200", "404", "409", "422", "500", "503"}
    job_id = next(p for p in paths["/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "job_id")
    assert job_id["schema"]["pattern"] == "^[0-9a-f]{32}$"
    for path, operations in paths.items():
        for method, operation in operations.items():
            for code, answer in operation["responses"].items():
                if int(code) >= 400:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), f"{method.upper()} {path} {code}"
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_job_ids_the_queue_makes_match_the_documented_pattern(queue: Queue) -> None:
    from app.api.routes import JOB_ID_PATTERN

    job = queue.submit(png_bytes(), "a.png", "image/png")

    assert re.fullmatch(JOB_ID_PATTERN.strip("^$"), job["id"])


def test_thumbnails_are_small_cached_jpegs_once_the_job_is_done(
    client: TestClient, local_store: LocalStore, settings: Settings
) -> None:
    job_id = upload(client, jpeg_bytes((1200, 900)), filename="big.jpg", content_type="image/jpeg").json()["id"]
    early = client.get(f"/jobs/{job_id}/thumbnails/result")
    Worker(local_store, settings).run(until_empty=True)

    answers = {kind: client.get(f"/jobs/{job_id}/thumbnails/{kind}") for kind in ("input", "result")}
    again = client.get(f"/jobs/{job_id}/thumbnails/input", headers={"If-None-Match": answers["input"].headers["etag"]})

    assert (early.status_code, early.json()["detail"]) == (409, "job not done")
    for kind, answer in answers.items():
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert "max-age" in answer.headers["cache-control"]
        assert Image.open(io.BytesIO(answer.content)).size == (320, 240), kind
        assert local_store.exists(f"thumbnails/{job_id}/{kind}.jpg")
    assert Image.open(io.BytesIO(answers["result"].content)).mode == "L"
    assert again.status_code == 304 and again.content == b""


def test_job_page_shows_the_failure_in_words_next_to_the_technical_reason(
    client: TestClient, local_store: LocalStore, settings: Settings
) -> None:
    job = Queue.from_settings(local_store, settings).submit(b"slipped past the API", "x.png", "image/png")
    Worker(local_store, settings).run(until_empty=True)

    page = client.get(f"/jobs/{job['id']}/page")
    view = client.get(f"/jobs/{job['id']}").json()

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "not an image in a supported format" in page.text and "invalid image" in page.text
    assert view["explanation"].startswith("The file is not an image")
    assert "Timeline" in page.text and "Queued" in page.text


@pytest.mark.parametrize(("job_id", "status"), [("nope", 422), ("0" * 32, 404)])
def test_job_page_for_a_missing_job_is_a_page_for_people(client: TestClient, job_id: str, status: int) -> None:
    page = client.get(f"/jobs/{job_id}/page")

    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert "All jobs" in page.text


def test_form_upload_is_confirmed_on_the_page(client: TestClient) -> None:
    response = client.post("/upload", files={"file": ("cat.png", png_bytes(), "image/png")})

    assert response.status_code == 200
    assert "<strong>cat.png</strong> was received as job" in response.text
    assert client.get("/?submitted=" + "0" * 32).text.count("was received") == 0


def test_api_docs_are_served_from_the_package(client: TestClient) -> None:
    docs = client.get("/docs")
    scripts = re.findall(r'src="([^"]+)"', docs.text) + re.findall(r'href="([^"]+\.css)"', docs.text)

    assert docs.status_code == 200 and scripts
    assert all(url.startswith("/static/") for url in scripts), scripts
    assert all(client.get(url).status_code == 200 for url in scripts)


def test_readme_api_table_matches_the_openapi_document(client: TestClient) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### HTTP API"):readme.index("Outside the contract")]
    rows = re.findall(r"^\| `(GET|POST|PUT|DELETE) ([^`]+)` \|([\d, ]*)\|([\d, ]*)\|", section, re.MULTILINE)
    documented = {
        (method.lower(), path): {code.strip() for code in f"{ok},{errors}".split(",") if code.strip()}
        for method, path, ok, errors in rows
    }

    schema = client.get("/openapi.json").json()
    actual = {
        (method, path): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }

    assert documented == actual


def test_thumbnails_are_served_but_not_stored_while_read_only(
    client_for: Callable[..., TestClient], local_store: LocalStore, settings: Settings
) -> None:
    job = Queue.from_settings(local_store, settings).submit(png_bytes(), "a.png", "image/png")
    client = client_for(READ_ONLY=True)

    response = client.get(f"/jobs/{job['id']}/thumbnails/input")

    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert not local_store.exists(f"thumbnails/{job['id']}/input.jpg")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("invalid image: cannot decode image: decoder error -2", "damaged or incomplete"),
        ("invalid image: not a supported image: Truncated File Read", "damaged or incomplete"),
        ("invalid image: not a supported image: cannot identify image file", "not an image in a supported format"),
        ("invalid image: too many pixels: 9000x9000 exceeds the limit of 40000000", "more pixels than"),
        ("input missing: uploads/x/a.png", "no longer in storage"),
        ("gave up after 3 attempts; last error: the worker was lost mid-job", "kept stopping"),
        ("KeyError: 'surprise'", "does not recognise"),
    ],
)
def test_failure_reasons_are_explained_in_words(error: str, words: str) -> None:
    from app.api.explain import explain_error

    assert words in (explain_error(error) or "")
    assert explain_error(None) is None
