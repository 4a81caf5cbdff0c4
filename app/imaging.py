"""Image checks and the workload's transform: grayscale PNG, safe against hostile input."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageOps

#: Formats we decode (JPEG includes camera MPO files). Anything else (EPS runs
#: Ghostscript, PDF, PSD, ...) is refused before a decoder plugin touches it.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")


class ImageError(ValueError):
    """The input is not an image we can process: a permanent failure, retrying cannot help."""


class ImageTooLarge(ImageError):
    """The image declares more pixels than allowed (a likely decompression bomb)."""


@dataclass(frozen=True)
class ImageInfo:
    """What a verified upload turned out to be."""

    format: str
    width: int
    height: int
    content_type: str


def configure(max_pixels: int) -> None:
    """Set Pillow's process-wide decompression-bomb limit from settings."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(source: BinaryIO, max_pixels: int) -> Image.Image:
    """Open an allowed image within the pixel cap (lazily: nothing decoded yet); ``ImageError`` if not."""
    try:
        image = Image.open(source, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"not a supported image: {exc}") from None
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; this explicit
    # cap rejects everything it would warn about, without touching the
    # process-wide warning filters (which are not thread-safe).
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(f"too many pixels: {width}x{height} exceeds the limit of {max_pixels}")
    return image


def verify_image(source: BinaryIO, max_pixels: int) -> ImageInfo:
    """Check an upload is an allowed, intact image within the pixel cap; ``ImageError`` if not."""
    image = open_image(source, max_pixels)
    with image:
        info = ImageInfo(
            format=image.format or "",
            width=image.width,
            height=image.height,
            content_type=Image.MIME.get(image.format or "", "application/octet-stream"),
        )
        try:
            image.verify()
        except Exception as exc:  # Pillow's plugins raise a wide range of types for corrupt data.
            raise ImageError(f"corrupt image: {exc}") from None
    return info


def grayscale_png(data: bytes, max_pixels: int) -> bytes:
    """Return ``data`` as an upright 8-bit grayscale PNG; ``ImageError`` for undecodable input."""
    with open_image(io.BytesIO(data), max_pixels) as image:
        try:
            # A colour JPEG decodes straight to its luma channel: no RGB buffer four times the
            # size of the result (a no-op for other formats, which convert below).
            image.draft("L", None)
            image.load()
            upright = ImageOps.exif_transpose(image)
            gray = upright.convert("L")
        except MemoryError:
            raise
        except Exception as exc:  # truncated or corrupt data surfaces here as many types
            raise ImageError(f"cannot decode image: {exc}") from None
    out = io.BytesIO()
    gray.save(out, format="PNG", optimize=False)
    return out.getvalue()
