"""Decoding one image into the cache's format, with Pillow and NumPy only.

Resizing and cropping follow torchvision's ``resize`` (shorter side to ``px``, the longer by
``int(px * long / short)``, Pillow's antialiased bilinear) and ``center_crop`` (offsets
``round((size - px) / 2)``) on Pillow images; the tests compare the cache with torchvision's own.
"""

from __future__ import annotations

import numpy as np


def decode(path: str, px: int) -> np.ndarray | str | tuple[str, str]:
    """The image as (3, px, px) uint8; a string saying why it is not an image (corrupt,
    truncated: skipped by the caller); or ``("unreadable", why)`` when the file cannot be opened
    at all (the user's setup to fix)."""
    from PIL import Image  # lazy: only image folders need Pillow's plugins loaded

    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; an OSError here is not the image's fault
    except OSError as e:
        return ("unreadable", e.strerror or str(e))
    with f:
        try:
            with Image.open(f) as im:
                im.draft("RGB", (px, px))  # JPEG: decode at 1/2, 1/4, 1/8 scale when still >= px
                rgb = im.convert("RGB")
            w, h = rgb.size
            short, long = (w, h) if w <= h else (h, w)
            size = (px, int(px * long / short)) if w <= h else (int(px * long / short), px)
            if (w, h) != size:
                rgb = rgb.resize(size, Image.BILINEAR)
            w, h = rgb.size
            top, left = int(round((h - px) / 2.0)), int(round((w - px) / 2.0))
            rgb = rgb.crop((left, top, left + px, top + px))
        except Exception as e:  # noqa: BLE001 - any decoder error means this file is not an image
            return f"{type(e).__name__}: {e}"
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
