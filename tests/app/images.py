"""Generated test images, friendly and hostile."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode a Pillow image to bytes."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_bytes(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A colourful PNG of ``size``."""
    image = Image.new(mode, size, (200, 30, 90, 255)[: len(mode)] if mode in ("RGB", "RGBA") else 7)
    return encode(image, "PNG")


def jpeg_bytes(size: tuple[int, int] = (80, 60)) -> bytes:
    """A colourful JPEG of ``size``."""
    return encode(Image.new("RGB", size, (20, 160, 220)), "JPEG", quality=85)


def jpeg_with_orientation(size: tuple[int, int], orientation: int) -> bytes:
    """A JPEG whose EXIF says to rotate it when displayed."""
    image = Image.new("RGB", size, (250, 120, 0))
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif)


def truncated_png() -> bytes:
    """A PNG cut off in the middle of its pixel data."""
    data = encode(Image.effect_noise((128, 128), 60).convert("RGB"), "PNG")
    return data[: len(data) // 2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, well-formed PNG header declaring huge dimensions (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _chunk(b"IEND", b"")
    )


def eps_bytes() -> bytes:
    """A PostScript file: Pillow could open it, but only via Ghostscript, so it must be refused."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
