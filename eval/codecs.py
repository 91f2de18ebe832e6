"""Honest rates: bits per pixel of a token pyramid, and standard codecs (Pillow) at the same bytes.

    bpp = token_bits_per_pixel(tokens=85, vocab_size=21163, pixels=64 * 64)      # 0.298
    out = codec_at_bytes(image, "JPEG", max_bytes=153)   # best quality whose whole file fits, or None
    out.decoded, out.num_bytes, out.quality

A token pyramid of T tokens from a V-word codebook costs T * log2(V) bits: that is what an
entropy coder without a learned prior pays for a uniform choice among V words. The codecs are
charged their whole file (headers included), since that is what a user stores or sends. For each
image the codec gets the highest quality whose file is at most `max_bytes`; when even its lowest
quality is larger, the image has no file at that rate (None), and tables say so.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

CODECS = {  # name -> (Pillow format, lowest quality, highest quality, extra save arguments)
    "JPEG": ("JPEG", 1, 95, {"optimize": True, "subsampling": 2}),   # optimised Huffman tables, 4:2:0
    "WebP": ("WEBP", 0, 100, {"method": 6}),
}


def token_bits(tokens: int, vocab_size: int) -> float:
    """Bits of `tokens` uniform choices among `vocab_size` words: tokens * log2(vocab_size)."""
    if tokens < 0 or vocab_size < 1:
        raise ValueError(f"need tokens >= 0 and vocab_size >= 1; got {tokens}, {vocab_size}")
    return tokens * math.log2(vocab_size)


def token_bits_per_pixel(tokens: int, vocab_size: int, pixels: int) -> float:
    """tokens * log2(vocab_size) / pixels."""
    if pixels < 1:
        raise ValueError(f"pixels must be >= 1; got {pixels}")
    return token_bits(tokens, vocab_size) / pixels


@dataclass
class Encoded:
    decoded: np.ndarray      # uint8 (H, W, 3), the file read back
    num_bytes: int           # the whole file
    quality: int


def encode(image: np.ndarray, codec: str, quality: int) -> Encoded:
    """Write uint8 (H, W, 3) with a codec at a quality, read it back."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    fmt, _, _, extra = CODECS[codec]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, fmt, quality=int(quality), **extra)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        decoded = np.asarray(im.convert("RGB"), np.uint8)
    return Encoded(decoded, len(data), int(quality))


def codec_at_bytes(image: np.ndarray, codec: str, max_bytes: float) -> Encoded | None:
    """The highest-quality file of `codec` at most `max_bytes` long (binary search over quality;
    file size grows with quality), or None when the lowest quality is already larger."""
    _, lo, hi, _ = CODECS[codec] if codec in CODECS else (None, 0, 0, None)
    best = encode(image, codec, lo)
    if best.num_bytes > max_bytes:
        return None
    while lo < hi:          # invariant: quality lo fits
        mid = (lo + hi + 1) // 2
        e = encode(image, codec, mid)
        if e.num_bytes <= max_bytes:
            lo, best = mid, e
        else:
            hi = mid - 1
    return best


def codec_batch(images: np.ndarray, codec: str, max_bytes: float):
    """Per image of uint8 (N, H, W, 3): -> (decoded uint8 (N, H, W, 3), bytes (N,), fits bool (N,)).

    Images with no file at this rate are left as the lowest-quality file (bytes > max_bytes, fits False),
    so callers can report them or leave them out."""
    out, sizes, fits = [], [], []
    for im in images:
        e = codec_at_bytes(im, codec, max_bytes)
        fits.append(e is not None)
        e = e or encode(im, codec, CODECS[codec][1])
        out.append(e.decoded)
        sizes.append(e.num_bytes)
    return np.stack(out), np.array(sizes), np.array(fits)
