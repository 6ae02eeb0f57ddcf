"""Bytes from the web -> a validated, resized RGB JPEG + sha256 (DESIGN.md §2, §5).

`prepare` never raises for bad input: it returns a `Candidate`, or a `Rejection` with an
Outcome and a reason. It is CPU work; the crawler runs it in a process pool, off the loop.
JPEGs are decoded DCT-scaled (`Image.draft`) straight to about the stored size, which is
most of the speed of the crawl.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from explorer.config import CrawlConfig
from explorer.records import Candidate, Outcome

# Formats we read, by their magic bytes; anything else is not_image whatever its Content-Type.
MAGIC = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]
ORIENTATION = 0x0112  # EXIF tag
EMBED_SIDE = 16  # cheap embedding: a 16x16 colour thumbnail -> 768 dims


@dataclass(frozen=True)
class Rejection:
    """Why bytes did not become a Candidate."""

    outcome: Outcome
    reason: str


def sniff(body: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in MAGIC:
        if body.startswith(magic):
            return fmt
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: transparency over white, 16-bit scaled down, CMYK converted."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float32)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8), "L").convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in ("PA", "LA", "RGBA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def stored_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Size with the shorter side = `side` (never upscaled)."""
    short = min(width, height)
    if short <= side:
        return width, height
    scale = side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def cheap_embedding(im: Image.Image) -> np.ndarray:
    """A unit-norm float32 [768] signature: 16x16 RGB thumbnail minus its mean.

    Cosine between two signatures is the correlation of the thumbnails: re-encoded or
    resized copies score ~0.99, distinct images far lower.
    """
    thumb = im.convert("RGB").resize((EMBED_SIDE, EMBED_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    v = np.asarray(thumb, dtype=np.float32).reshape(-1)
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:  # a flat image: fall back to its colour, so two flat colours still differ
        v = np.asarray(thumb, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(v)) or 1.0
    return (v / norm).astype(np.float32)


def embed_bytes(data: bytes) -> np.ndarray:
    """cheap_embedding of stored image bytes: [768]."""
    with Image.open(io.BytesIO(data)) as im:
        return cheap_embedding(im)


def _decode(body: bytes, fmt: str, cfg: CrawlConfig) -> tuple[Image.Image, int, int] | Rejection:
    """Open, check the header size, verify, pick the first frame, decode (JPEG DCT-scaled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(body), formats=[fmt])
        w, h = im.size
        if w * h > cfg.max_pixels:
            return Rejection(Outcome.BOMB, f"{w}x{h} is over {cfg.max_pixels} pixels")
        if min(w, h) < cfg.min_side:
            return Rejection(Outcome.TOO_SMALL, f"{w}x{h}, shorter side under {cfg.min_side}")
        if max(w, h) / min(w, h) > cfg.max_aspect:
            return Rejection(Outcome.BAD_ASPECT, f"{w}x{h}, aspect over {cfg.max_aspect}")
        if fmt != "JPEG":  # verify() checks PNG CRCs etc.; for JPEG it does nothing useful
            im.verify()
            im = Image.open(io.BytesIO(body), formats=[fmt])
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated: the first frame
        if fmt == "JPEG":
            im.draft("RGB", (cfg.image_size, cfg.image_size))  # DCT-scaled decode, >= the stored size
        im.load()
        return im, w, h


def prepare_with_embedding(body: bytes, cfg: CrawlConfig) -> tuple[Candidate, np.ndarray] | Rejection:
    """`prepare` plus the cheap embedding of the stored image ([768] float32)."""
    fmt = sniff(body)
    if fmt is None:
        head = body[:16].lstrip().lower()
        what = "HTML" if head.startswith((b"<!doctype", b"<html")) else "unknown bytes"
        return Rejection(Outcome.NOT_IMAGE, f"magic bytes are not an image ({what})")
    try:
        decoded = _decode(body, fmt, cfg)
        if isinstance(decoded, Rejection):
            return decoded
        im, orig_w, orig_h = decoded
        orientation = im.getexif().get(ORIENTATION, 1)
        if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
            orig_w, orig_h = orig_h, orig_w
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
        size = stored_size(*im.size, cfg.image_size)
        if size != im.size:
            # area average (as img2dataset's INTER_AREA); draft already did the bulk of the scaling
            im = im.resize(size, Image.Resampling.BOX)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=cfg.jpeg_quality)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejection(Outcome.BOMB, str(e)[:200])
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.UnidentifiedImageError) as e:
        return Rejection(Outcome.CORRUPT, f"{type(e).__name__}: {str(e)[:200]}")
    data = out.getvalue()
    cand = Candidate(sha256=hashlib.sha256(data).hexdigest(), data=data, width=im.width,
                     height=im.height, orig_width=orig_w, orig_height=orig_h)
    return cand, cheap_embedding(im)


def prepare(body: bytes, cfg: CrawlConfig) -> Candidate | Rejection:
    """Validate, decode, orient, convert, resize and re-encode one downloaded image."""
    result = prepare_with_embedding(body, cfg)
    return result if isinstance(result, Rejection) else result[0]
