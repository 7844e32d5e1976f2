"""Cheap checks of an image file before the model loads (ImageNet, OpenImages: JPEG; PNG too).

Reads a few bytes at each end, never the whole file: a dataset of 50,000 images is checked in
seconds. A JPEG starts with its SOI marker and ends with EOI (FFD9); a PNG starts with its
signature and ends with its IEND chunk. A file whose end is not there is decoded once, in full,
to tell trailing bytes after the image (accepted: the decoder reads the image) from truncation.
"""
from __future__ import annotations

from pathlib import Path

from evalkit.util import file_ends

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
TAIL = 1024  # trailing padding tolerated after the end marker without a full decode


def image_problem(path: Path) -> str | None:
    """What is wrong with the image file at `path` ("is missing", "is empty", ...), or None."""
    ends = file_ends(path, len(PNG_SIGNATURE), TAIL)
    if isinstance(ends, str):
        return ends
    size, head, tail = ends
    if head.startswith(JPEG_SOI):
        end = JPEG_EOI
    elif head == PNG_SIGNATURE:
        end = PNG_IEND
    else:
        return f"is not a JPEG or PNG image (it starts with {head[:4].hex()})"
    if end in tail:
        return None
    return _decode_problem(path)


def _decode_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"is truncated or corrupt (no end marker; decoding it fails: {first})"
    return None
