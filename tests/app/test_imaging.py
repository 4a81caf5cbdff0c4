"""Grayscale conversion and upload checks, with friendly and hostile inputs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.imaging import ImageError, ImageTooLarge, grayscale_png, verify_image

from .images import bomb_png, encode, eps_bytes, jpeg_bytes, jpeg_with_orientation, png_bytes, truncated_png

LIMIT = 40_000_000


@pytest.mark.parametrize(
    "data",
    [
        png_bytes((64, 48)),
        png_bytes((31, 17), mode="RGBA"),
        jpeg_bytes((80, 60)),
        encode(Image.new("P", (40, 30), 3), "GIF"),
        encode(Image.new("I;16", (20, 10), 40000), "PNG"),
    ],
    ids=["png", "rgba-png", "jpeg", "gif", "16-bit-png"],
)
def test_grayscale_png_keeps_size_and_yields_mode_l_png(data: bytes) -> None:
    original = Image.open(io.BytesIO(data))

    result = Image.open(io.BytesIO(grayscale_png(data, LIMIT)))

    assert (result.format, result.mode, result.size) == ("PNG", "L", original.size)


def test_exif_orientation_is_applied_before_converting() -> None:
    data = jpeg_with_orientation((60, 20), orientation=6)

    result = Image.open(io.BytesIO(grayscale_png(data, LIMIT)))

    assert result.size == (20, 60)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (truncated_png(), ImageError),
        (b"just some text, named .png by the client", ImageError),
        (b"", ImageError),
        (eps_bytes(), ImageError),
        (bomb_png(), ImageTooLarge),
    ],
    ids=["truncated", "text", "empty", "eps", "bomb"],
)
def test_undecodable_or_hostile_input_raises_a_permanent_image_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        grayscale_png(data, LIMIT)


def test_images_over_the_pixel_cap_are_refused_even_below_pillows_own_limit() -> None:
    data = png_bytes((100, 100))

    with pytest.raises(ImageTooLarge, match="100x100"):
        grayscale_png(data, max_pixels=9_999)


def test_verify_reports_format_size_and_content_type() -> None:
    info = verify_image(io.BytesIO(jpeg_bytes((80, 60))), LIMIT)

    assert (info.format, info.width, info.height, info.content_type) == ("JPEG", 80, 60, "image/jpeg")


@pytest.mark.parametrize(
    ("data", "error"),
    [(truncated_png(), ImageError), (b"hello", ImageError), (eps_bytes(), ImageError), (bomb_png(), ImageTooLarge)],
    ids=["truncated", "text", "eps", "bomb"],
)
def test_verify_refuses_hostile_uploads(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        verify_image(io.BytesIO(data), LIMIT)
