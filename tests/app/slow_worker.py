"""Run the real worker entry point with a transform slowed by ``argv[1]`` seconds (for process-level tests)."""

import logging
import sys
import time

from app.imaging import grayscale_png
from app.settings import load_settings
from app.worker import run_worker


def main() -> int:
    """Start ``run_worker`` exactly as ``spotshift worker`` does, with a slow transform."""
    delay = float(sys.argv[1])
    settings = load_settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(levelname)s %(name)s: %(message)s")

    def slow(data: bytes) -> bytes:
        time.sleep(delay)
        return grayscale_png(data, settings.MAX_IMAGE_PIXELS)

    return run_worker(settings, process=slow)


if __name__ == "__main__":
    sys.exit(main())
