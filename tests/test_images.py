"""The image pipeline on hostile and unusual inputs."""
import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageOps

from explorer.config import CrawlConfig
from explorer.crawl.images import (Rejection, cheap_embedding, dct_reduction, pixels, prepare, resize_area, sniff,
                                   stored_size)
from explorer.records import Candidate, UrlOutcome
from tests.crawl_fixtures import jpeg_bytes

CFG = CrawlConfig(image_size=64, min_side=16, max_aspect=4.0, max_pixels=4_000_000)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries (almost) no pixels: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rejected(body: bytes, cfg: CrawlConfig = CFG) -> UrlOutcome:
    result = prepare(body, cfg)
    assert isinstance(result, Rejection), result
    return result.outcome


def test_a_30000_square_png_header_is_a_bomb():
    assert rejected(png_header_only(30000, 30000)) == UrlOutcome.BOMB


def test_html_served_as_an_image_is_not_an_image():
    assert rejected(b"<!DOCTYPE html><html><body>hello</body></html>") == UrlOutcome.NOT_IMAGE
    assert rejected(b"") == UrlOutcome.NOT_IMAGE
    assert sniff(jpeg_bytes(40, 40)) == "JPEG"


def test_truncated_and_garbled_files_are_corrupt():
    body = jpeg_bytes(300, 200)
    assert rejected(body[: len(body) // 2]) == UrlOutcome.CORRUPT
    assert rejected(b"\x89PNG\r\n\x1a\n" + b"\0" * 100) == UrlOutcome.CORRUPT
    png = encode(Image.new("RGB", (100, 100), "red"), "PNG")
    assert rejected(png[:-20] + b"x" * 20) == UrlOutcome.CORRUPT  # bad CRC, caught by verify


def test_size_and_aspect_limits():
    assert rejected(jpeg_bytes(10, 40)) == UrlOutcome.TOO_SMALL
    assert rejected(jpeg_bytes(500, 100)) == UrlOutcome.BAD_ASPECT


def test_jpeg_is_decoded_draft_scaled_to_the_stored_size():
    cand = prepare(jpeg_bytes(1000, 600), CFG)
    assert isinstance(cand, Candidate)
    assert (cand.orig_width, cand.orig_height) == (1000, 600)
    assert min(cand.width, cand.height) == 64 and cand.width == round(1000 * 64 / 600)
    assert cand.sha256 == hashlib.sha256(cand.data).hexdigest()
    assert Image.open(io.BytesIO(cand.data)).format == "JPEG"


@pytest.mark.parametrize("side", [1, 64, 255, 256, 300])
def test_dct_reduction_is_the_largest_power_of_two_that_keeps_the_side(side):
    for short in range(1, 2600, 7):
        for width, height in ((short, short + 13), (short * 3, short)):
            k = dct_reduction(width, height, side)
            assert k in (1, 2, 4, 8)
            assert k == 1 or -(-short // k) >= side          # never below the stored side
            assert k == 8 or -(-short // (2 * k)) < side     # and no smaller power of two would do


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("width,height", [(1000, 600), (600, 1000), (520, 130), (129, 300), (255, 64), (64, 64),
                                          (1023, 511)])
def test_jpegs_are_stored_at_the_size_of_their_source_whatever_the_dct_scale(width, height, progressive):
    rng = np.random.default_rng(width * height)
    im = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    cand = prepare(encode(im, "JPEG", quality=90, progressive=progressive), CFG)
    assert isinstance(cand, Candidate)
    assert (cand.width, cand.height) == stored_size(width, height, CFG.image_size)
    assert Image.open(io.BytesIO(cand.data)).size == (cand.width, cand.height)


def test_small_images_are_not_upscaled():
    cand = prepare(jpeg_bytes(40, 30), CFG)
    assert (cand.width, cand.height) == (40, 30)


@pytest.mark.parametrize("make", [
    lambda: encode(Image.new("CMYK", (120, 90), (0, 255, 255, 0)), "JPEG"),
    lambda: encode(Image.new("P", (120, 90), 3), "PNG", transparency=3),
    lambda: encode(Image.new("LA", (120, 90), (128, 100)), "PNG"),
    lambda: encode(Image.fromarray(np.full((90, 120), 40000, np.uint16)), "PNG"),
    lambda: encode(Image.new("RGBA", (120, 90), (10, 20, 30, 0)), "WEBP"),
    lambda: encode(Image.new("1", (120, 90), 1), "BMP"),
    lambda: encode(Image.new("RGB", (120, 90), "blue"), "GIF", save_all=True,
                   append_images=[Image.new("RGB", (120, 90), "red")]),
])
def test_unusual_modes_become_rgb_jpegs(make):
    cand = prepare(make(), CFG)
    assert isinstance(cand, Candidate), cand
    im = Image.open(io.BytesIO(cand.data))
    assert im.mode == "RGB" and min(im.size) == 64


def test_sixteen_bit_is_scaled_not_clipped():
    body = encode(Image.fromarray(np.full((90, 120), 32768, np.uint16)), "PNG")
    px = Image.open(io.BytesIO(prepare(body, CFG).data)).getpixel((10, 10))
    assert 120 <= px[0] <= 135  # half of full scale, not 255


def test_transparent_palette_goes_over_white():
    im = Image.new("P", (120, 90), 3)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.putpixel((100, 80), 1)
    body = encode(im, "PNG", transparency=3)
    assert Image.open(io.BytesIO(prepare(body, CFG).data)).getpixel((5, 5)) >= (250, 250, 250)


def quadrants(width: int, height: int) -> Image.Image:
    """Four flat colours, one a quadrant: any flip or turn moves them somewhere else."""
    im = Image.new("RGB", (width, height))
    for (x, y), colour in zip([(0, 0), (1, 0), (0, 1), (1, 1)], ["red", "lime", "blue", "yellow"]):
        im.paste(colour, (x * width // 2, y * height // 2, (x + 1) * width // 2, (y + 1) * height // 2))
    return im


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_defines_it(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = encode(quadrants(200, 100), "JPEG", quality=95, exif=exif.tobytes())
    cand = prepare(body, CFG)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(body)))
    assert (cand.orig_width, cand.orig_height) == upright.size
    got = Image.open(io.BytesIO(cand.data))
    assert got.size == upright.resize(got.size).size and min(got.size) == 64
    diff = np.abs(np.asarray(got, np.int16) - np.asarray(upright.convert("RGB").resize(got.size), np.int16))
    assert diff.mean() < 8  # same picture the same way up (a wrong turn differs by ~100)


def test_jpeg_with_harmless_marker_junk_is_kept():
    """libjpeg warns about bytes before a marker (common on the web) and its strict mode refuses
    the file; such an image is still decoded (by Pillow) and kept, not called corrupt."""
    body = jpeg_bytes(300, 200)
    assert body[2:4] == b"\xff\xe0"  # JFIF's APP0 segment first
    after_app0 = 4 + int.from_bytes(body[4:6], "big")
    junk = body[:after_app0] + b"\x00\x13\x37" + body[after_app0:]  # 3 stray bytes before the DQT marker
    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(junk)  # what the fast path meets
    cand = prepare(junk, CFG)
    assert isinstance(cand, Candidate), cand
    assert (cand.width, cand.height) == (96, 64)


def test_jpeg_decode_matches_pillows_picture():
    body = jpeg_bytes(900, 600, seed=3)
    cand = prepare(body, CFG)
    ref = Image.open(io.BytesIO(body)).convert("RGB").resize((cand.width, cand.height), Image.Resampling.BOX)
    diff = np.abs(np.asarray(Image.open(io.BytesIO(cand.data)), np.int16) - np.asarray(ref, np.int16))
    assert diff.mean() < 4


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_other_formats_keep_their_picture(fmt):
    """Pillow decodes these (its RGB rows carry a zero padding byte, which no step may take for
    transparency); what is stored is the picture, resized."""
    body = encode(Image.open(io.BytesIO(jpeg_bytes(450, 300, seed=4))), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    cand = prepare(body, CFG)
    ref = Image.open(io.BytesIO(body)).convert("RGB").resize((cand.width, cand.height), Image.Resampling.BOX)
    diff = np.abs(np.asarray(Image.open(io.BytesIO(cand.data)), np.int16) - np.asarray(ref, np.int16))
    assert (cand.width, cand.height) == (96, 64) and diff.mean() < 4


def test_grey_jpeg_becomes_rgb():
    body = encode(Image.new("L", (120, 90), 77), "JPEG")
    im = Image.open(io.BytesIO(prepare(body, CFG).data))
    assert im.mode == "RGB" and min(im.size) == 64
    assert all(abs(c - 77) <= 2 for c in im.getpixel((30, 30)))


def test_cheap_embedding_matches_copies_and_separates_distinct_images():
    thr = CrawlConfig().near_dup_threshold
    base = Image.open(io.BytesIO(jpeg_bytes(400, 300, seed=1)))
    v = cheap_embedding(base)
    assert v.dtype == np.float32 and v.shape == (768,) and abs(np.linalg.norm(v) - 1) < 1e-5
    resized = base.resize((200, 150))
    reencoded = Image.open(io.BytesIO(encode(base, "JPEG", quality=40)))
    brighter = Image.eval(base, lambda x: min(255, x + 20))
    for copy in (resized, reencoded, brighter):
        assert float(v @ cheap_embedding(copy)) >= thr
    sims = [float(v @ cheap_embedding(Image.open(io.BytesIO(jpeg_bytes(400, 300, seed=s))))) for s in range(2, 30)]
    assert max(sims) < thr
    red, blue = Image.new("RGB", (50, 50), "red"), Image.new("RGB", (50, 50), "blue")
    assert float(cheap_embedding(red) @ cheap_embedding(blue)) < thr


@pytest.mark.parametrize("mode,size", [("RGB", (123, 77)), ("RGBX", (64, 64)), ("RGB", (6000, 6000))])
def test_pixels_are_the_images_own_whatever_the_layout(mode, size):
    """`pixels` reads the image's memory in place where Pillow exports it (rows 4 bytes a pixel)
    and copies where it cannot (rows spread over blocks, as for a big image); the same either way."""
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8))
    im = im.resize(size, Image.Resampling.NEAREST).convert(mode)
    px, colorspace = pixels(im)
    assert px.shape[:2] == (size[1], size[0])
    assert colorspace == "RGBX" if size[0] < 1000 else colorspace in ("RGB", "RGBX")  # stored sizes: in place
    assert np.array_equal(px[..., :3], np.asarray(im.convert("RGB")))


@pytest.mark.parametrize("mode,size,out", [("RGBX", (371, 290), (328, 256)), ("RGB", (300, 300), (256, 256)),
                                           ("RGB", (6000, 600), (2560, 256)), ("RGB", (2100, 2000), (269, 256))])
def test_resize_area_is_a_box_filter_like_pillows(mode, size, out):
    """The crawl's resizer (fast_image_resize) against Pillow's BOX on a textured picture, for an
    image read in place (RGBX), one copied (a big RGB one, rows spread over blocks), and one over
    COPY_MAX_PIXELS (Pillow's own): same size and mode, pixels within rounding on average (a
    pixel whose centre sits on a box edge may count on the other side)."""
    rng = np.random.default_rng(1)
    grain = Image.fromarray(rng.integers(0, 256, (size[1] // 3, size[0] // 3, 3), dtype=np.uint8))
    im = grain.resize(size, Image.Resampling.BICUBIC).convert(mode)
    got = resize_area(im, out)
    assert got.size == out and got.mode in ("RGB", "RGBX")
    ours = np.asarray(got.convert("RGB"), np.int16)
    ref = np.asarray(im.convert("RGB").resize(out, Image.Resampling.BOX), np.int16)
    assert np.abs(ours - ref).mean() < 0.5
    flat = Image.new(mode, size, (200, 30, 90))  # an average of one colour is that colour, exactly
    assert np.all(np.asarray(resize_area(flat, out).convert("RGB")) == (200, 30, 90))
