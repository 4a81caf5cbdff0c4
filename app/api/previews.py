"""Image work the API itself does: a bounded decode of uploads and small previews of jobs."""

from __future__ import annotations

import io
from typing import BinaryIO

from PIL import Image, ImageOps

from app.imaging import ImageError, open_image

#: Uploads up to this many pixels are decoded in full by the API, so damaged
#: files are refused with 415 at once; bigger ones (except JPEG, see below) are
#: only structurally verified and a damaged one fails later in the worker.
UPLOAD_DECODE_PIXELS = 12_000_000
#: Longest side of a preview, in pixels.
THUMBNAIL_SIDE = 320
#: JPEG reduces by up to 8 in the decoder (DCT scaling) but still reads every byte of the scan.
_JPEG_SCALE = 8



def _decode(image: Image.Image, target: tuple[int, int]) -> None:
    if image.format == "JPEG":
        image.draft(image.mode, target)
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types for damaged data.
        raise ImageError(f"cannot decode image: {exc}") from None


def check_decodes(source: BinaryIO, max_pixels: int) -> bool:
    """Decode an upload where that is cheap; ``ImageError`` if damaged, False if too big to check here."""
    with open_image(source, max_pixels) as image:
        width, height = image.size
        if image.format != "JPEG" and width * height > UPLOAD_DECODE_PIXELS:
            return False
        _decode(image, (max(1, width // _JPEG_SCALE), max(1, height // _JPEG_SCALE)))
    return True


def thumbnail_jpeg(data: bytes, max_pixels: int, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG preview of ``data``, upright, at most ``side`` pixels on its longest side."""
    with open_image(io.BytesIO(data), max_pixels) as image:
        _decode(image, (side, side))
        try:
            preview = ImageOps.exif_transpose(image)
            preview.thumbnail((side, side))
            if preview.mode in ("RGBA", "LA", "PA") or "transparency" in preview.info:
                backdrop = Image.new("RGB", preview.size, "white")
                backdrop.paste(preview.convert("RGBA"), mask=preview.convert("RGBA").getchannel("A"))
                preview = backdrop
            elif preview.mode not in ("RGB", "L"):
                preview = preview.convert("RGB")
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageError(f"cannot decode image: {exc}") from None
    out = io.BytesIO()
    preview.save(out, format="JPEG", quality=82)
    return out.getvalue()
