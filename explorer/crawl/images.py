"""Bytes from the web -> a validated, resized RGB JPEG + sha256 (ARCHITECTURE.md, "Guards").

`prepare` never raises for bad input: it returns a `Candidate`, or a `Rejection` with an
UrlOutcome and a reason. It is CPU work, kept off the crawl's event loop: the fetch workers run
it (explorer/crawl/fetchers.py), or threads with crawl.pool=thread. Pillow
parses headers (formats, sizes, EXIF) and decodes everything but plain JPEGs; libjpeg-turbo
(simplejpeg) decodes JPEGs DCT-scaled by a power of two toward the stored size and encodes the
stored JPEG, and fast_image_resize (SIMD) does the rest of the resizing, all with the GIL released: most
of the speed of the crawl.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import simplejpeg
from cykooz_resizer import FilterType, ImageData, PixelType, ResizeAlg, ResizeOptions, Resizer
from PIL import Image

from explorer.config import CrawlConfig
from explorer.crawl.decontam import copy_hashes
from explorer.records import Candidate, UrlOutcome

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
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose)
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}
EMBED_SIDE = 16  # cheap embedding: a 16x16 colour thumbnail -> 768 dims
# resize_area's filter. use_alpha=False: the 4th byte of RGBX is padding, not alpha (0 in some of
# Pillow's RGB images: premultiplying by it blacked them out)
AREA = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.box), use_alpha=False)
DEEP_GREY = ("I;16", "I;16B", "I;16L", "I", "F")  # grey deeper than 8 bits: Pillow's convert clips it
COPY_MAX_PIXELS = 4_000_000  # larger sources are resized by Pillow, in place (see resize_area)


@dataclass(frozen=True)
class Rejection:
    """Why bytes did not become a Candidate."""

    outcome: UrlOutcome
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
    """Any decoded image -> RGB, the one way every path sees a picture (crawl, targets, training,
    evaluation): transparency over white, 16-bit scaled down, CMYK and the rest converted.

    Transparency means an alpha channel, a palette with alpha, or a transparent colour (PNG's
    tRNS in grey, RGB, 1-bit or 16-bit images): what hides under it (black, noise) never shows.
    """
    if im.mode in DEEP_GREY:
        im = _eight_bit(im)
    if im.has_transparency_data:
        return _over_white(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16/32-bit or float grey image as 8-bit L (LA where a transparent grey is named); Pillow's
    own conversion clips to 255 instead of scaling."""
    a = np.asarray(im, dtype=np.float32)
    hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
    grey = Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    key = im.info.get("transparency")
    if not isinstance(key, (int, float)):
        return grey
    alpha = Image.fromarray(np.where(a == key, 0, 255).astype(np.uint8), "L")
    return Image.merge("LA", (grey, alpha))


def _over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")  # (Pillow turns a tRNS colour or palette alpha into the alpha channel)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright). Read after decoding where Pillow decodes: a PNG's
    EXIF comes with its pixels."""
    return im.getexif().get(ORIENTATION, 1)


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """`im` turned as its EXIF `orientation` says (unknown values: as it is)."""
    return im.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else im


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as the crawl would see it, at full size: first frame, `to_rgb`, EXIF
    orientation applied as the crawl applies it. For the target's files and stored images read
    back for training. A user's file whose EXIF does not parse is taken as it stands (the crawl
    rejects such a download as corrupt; a target's image cannot be dropped)."""
    with Image.open(path) as im:
        try:
            orientation = exif_orientation(im)  # (first: a PNG loads itself for it, and a loaded file is closed)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError):
            orientation = 1
        im.load()  # the pixels, before the file closes
        return upright(to_rgb(im), orientation)


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
    if im.mode not in ("RGB", "RGBX"):  # (RGBX: the fast JPEG path's, thumbnailed without a copy)
        im = to_rgb(im)
    thumb = im.resize((EMBED_SIDE, EMBED_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0).convert("RGB")
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


def _open_checked(body: bytes, fmt: str, cfg: CrawlConfig) -> Image.Image | Rejection:
    """Parse the header only (lazy), and refuse bombs, tiny images and extreme aspects before decoding."""
    im = Image.open(io.BytesIO(body), formats=[fmt])
    w, h = im.size
    if w * h > cfg.max_pixels:
        return Rejection(UrlOutcome.BOMB, f"{w}x{h} is over {cfg.max_pixels} pixels")
    if min(w, h) < cfg.min_side:
        return Rejection(UrlOutcome.TOO_SMALL, f"{w}x{h}, shorter side under {cfg.min_side}")
    if max(w, h) / min(w, h) > cfg.max_aspect:
        return Rejection(UrlOutcome.BAD_ASPECT, f"{w}x{h}, aspect over {cfg.max_aspect}")
    return im


def dct_reduction(width: int, height: int, side: int) -> int:
    """The largest of 1, 2, 4 and 8 by which a JPEG can be DCT-scaled and keep its shorter side
    >= `side`. Powers of two only: libjpeg-turbo's IDCTs at 1/2, 1/4 and 1/8 are SIMD, its other
    scales (3/8, 5/8, 7/8...) plain C, slower than decoding at full size and resizing after."""
    short, k = min(width, height), 1
    while k < 8 and -(-short // (2 * k)) >= side:
        k *= 2
    return k


def _turbo_decode(body: bytes, width: int, height: int, side: int) -> Image.Image | None:
    """A baseline or progressive RGB/grey JPEG of `width` x `height` (its header's) decoded by
    libjpeg-turbo, DCT-scaled by `dct_reduction`, with the GIL released throughout, as an RGBX
    image that shares the decoder's buffer; None where libjpeg reports anything amiss (Pillow then
    decides, as it tolerates the web's harmless marker quirks)."""
    k = dct_reduction(width, height, side)
    try:
        px = simplejpeg.decode_jpeg(body, colorspace="RGBX", min_height=-(-height // k), min_width=-(-width // k))
    except ValueError:
        return None
    return Image.frombuffer("RGBX", (px.shape[1], px.shape[0]), px, "raw", "RGBX", 0, 1)


def _pillow_decode(header: Image.Image, body: bytes, fmt: str, cfg: CrawlConfig) -> Image.Image:
    """From the (not yet loaded) header: verify where the format has checksums (PNG), take the
    first frame, decode (JPEG DCT-scaled)."""
    im = header
    if fmt == "PNG":  # verify() checks PNG's CRCs; Pillow's other formats' verify() checks nothing
        header.verify()  # which leaves the image unusable: decode from a fresh parse (the other
        im = Image.open(io.BytesIO(body), formats=[fmt])  # formats skip that second parse)
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated: the first frame
    if fmt == "JPEG":
        im.draft("RGB", (cfg.image_size, cfg.image_size))  # DCT-scaled decode, >= the stored size
    im.load()
    return im


def pixels(im: Image.Image) -> tuple[np.ndarray, str]:
    """An RGB or RGBX image's pixels as a uint8 array and its simplejpeg colorspace, without a
    copy where Pillow can export them (its Arrow interface: rows of 4 bytes a pixel, RGB padded);
    a copy (GIL held) where it cannot (rows in several blocks, an old Pillow). The values buffer
    is read as such: pyarrow's own `flatten().to_numpy()` imports pyarrow.compute and pandas
    on first use, 0.3 s of every worker's first image."""
    n = im.width * im.height * 4
    try:
        values = pa.array(im).values.buffers()[1]
        if values is None or values.size < n:
            raise ValueError("no pixel buffer")
        return np.frombuffer(values, np.uint8, count=n).reshape(im.height, im.width, 4), "RGBX"
    except (AttributeError, TypeError, ValueError, pa.ArrowException):
        return np.asarray(im.convert("RGB")), "RGB"


def resize_area(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An RGB(X) image area-averaged to `size` with a box filter, as Pillow's BOX (the same pixels
    but where a source pixel's centre sits on a box edge; both are as close to cv2's exact
    INTER_AREA, img2dataset's choice). By fast_image_resize (cykooz.resizer: SIMD, the GIL
    released): 0.2-0.3 ms for a crawled image against Pillow's 0.7, which was the largest cost
    after the decode. It takes plain bytes (its Pillow bridge takes no RGBX and reads Pillow's C
    structs): one copy in, one out, which explorer/crawl/allocator.py keeps cheap. A source over
    COPY_MAX_PIXELS (a big PNG that Pillow decoded whole) goes to Pillow's BOX instead: its
    copies would hold ~3x the picture's memory (0.8 GB at crawl.max_pixels) for a worker's while."""
    if im.width * im.height > COPY_MAX_PIXELS:
        return im.resize(size, Image.Resampling.BOX)
    px, colorspace = pixels(im)
    kind, mode = (PixelType.U8x4, "RGBX") if colorspace == "RGBX" else (PixelType.U8x3, "RGB")
    src = ImageData(im.width, im.height, kind, px.tobytes())
    dst = ImageData(size[0], size[1], kind)
    Resizer().resize(src, dst, AREA)  # (a Resizer is cheap, ~1 us, and one per call is thread-safe)
    return Image.frombuffer(mode, size, dst.get_buffer(), "raw", mode, 0, 1)


def encode_jpeg(im: Image.Image, quality: int) -> bytes:
    """RGB(X) image -> JPEG bytes (4:2:0, as Pillow's default), by libjpeg-turbo with the GIL
    released. Pillow's own JPEG encoder holds the GIL, which serialised the crawl's threads."""
    px, colorspace = pixels(im)
    return simplejpeg.encode_jpeg(px, quality=quality, colorspace=colorspace, colorsubsampling="420")


def prepare_with_embedding(body: bytes, cfg: CrawlConfig) -> tuple[Candidate, np.ndarray] | Rejection:
    """`prepare` plus the cheap embedding of the stored image ([768] float32); the Candidate
    carries the image's copy hashes (explorer/crawl/decontam.py), for the leak check."""
    fmt = sniff(body)
    if fmt is None:
        head = body[:16].lstrip().lower()
        what = "HTML" if head.startswith((b"<!doctype", b"<html")) else "unknown bytes"
        return Rejection(UrlOutcome.NOT_IMAGE, f"magic bytes are not an image ({what})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = _open_checked(body, fmt, cfg)
            if isinstance(header, Rejection):
                return header
            orig_w, orig_h = header.size
            exif_from = header  # read after decoding where Pillow decodes: PNG's getexif() loads it
            im = None
            if fmt == "JPEG" and header.mode in ("RGB", "L"):
                im = _turbo_decode(body, orig_w, orig_h, cfg.image_size)
            if im is None:
                exif_from = _pillow_decode(header, body, fmt, cfg)
                im = to_rgb(exif_from)
            orientation = exif_orientation(exif_from)
        size = stored_size(orig_w, orig_h, cfg.image_size)  # (from the source's size, not the decoded one's)
        if size != im.size:
            im = resize_area(im, size)  # (a JPEG's DCT scaling did part of it)
        im = upright(im, orientation)  # applied to the small image
        if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
            orig_w, orig_h = orig_h, orig_w
        data = encode_jpeg(im, cfg.jpeg_quality)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejection(UrlOutcome.BOMB, str(e)[:200])
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.UnidentifiedImageError) as e:
        return Rejection(UrlOutcome.CORRUPT, f"{type(e).__name__}: {str(e)[:200]}")
    cand = Candidate(sha256=hashlib.sha256(data).hexdigest(), data=data, width=im.width,
                     height=im.height, orig_width=orig_w, orig_height=orig_h,
                     copy_hash=copy_hashes(im).tobytes() if cfg.leak_hamming >= 0 else b"")
    return cand, cheap_embedding(im)


def prepare(body: bytes, cfg: CrawlConfig) -> Candidate | Rejection:
    """Validate, decode, orient, convert, resize and re-encode one downloaded image."""
    result = prepare_with_embedding(body, cfg)
    return result if isinstance(result, Rejection) else result[0]
