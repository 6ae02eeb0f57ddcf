"""One way to make an image RGB (explorer/crawl/images.py to_rgb): the crawl, a `folder:` target and
the training and embedding loaders see the same picture, transparency over white, whatever hides
under the transparent pixels."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from explorer.config import CrawlConfig
from explorer.model.data import ImageCaptionDataset, ImageRecord, embed_paths
from explorer.crawl.images import Rejection, prepare, to_rgb
from explorer.inputs.targets import load_target

CFG = CrawlConfig(image_size=64, min_side=16, max_aspect=4.0, max_pixels=4_000_000)
SIDE = 128  # source pictures: stored at 64, so the crawl resizes them by exactly 2
WHITE = (255, 255, 255)
TRANSPARENT_KINDS = ["RGBA", "LA", "P+tRNS", "RGB+tRNS", "L+tRNS", "I;16+tRNS"]


def png_bytes(im: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG", **save)
    return out.getvalue()


def reopened(im: Image.Image, **save) -> Image.Image:
    """`im` as a PNG file gives it back: the mode and transparency info real files carry."""
    return Image.open(io.BytesIO(png_bytes(im, **save)))


# ------------------------------------------------------------------------------- to_rgb, per mode

def palette(colours: list[tuple[int, ...]], mode: str = "RGB") -> Image.Image:
    """A 2x1 P image showing palette entries 0 and 1."""
    im = Image.new("P", (2, 1))
    im.putpalette([c for colour in colours for c in colour], mode)
    im.putpixel((1, 0), 1)
    return im


def two_pixels(mode: str, hidden, shown) -> Image.Image:
    """A 2x1 image: pixel 0 `hidden`, pixel 1 `shown`."""
    im = Image.new(mode, (2, 1), hidden)
    im.putpixel((1, 0), shown)
    return im


def with_alpha(im: Image.Image) -> Image.Image:
    """`im` with pixel 0 transparent and pixel 1 opaque."""
    im.putalpha(two_pixels("L", 0, 255))
    return im


# name -> (image, pixel 0 as RGB, pixel 1 as RGB). Pixel 0 is transparent where the mode has
# transparency, and hides a colour that is neither white nor black.
MODES = {
    "RGBA": (lambda: two_pixels("RGBA", (200, 0, 0, 0), (10, 20, 30, 255)), WHITE, (10, 20, 30)),
    "RGBA half": (lambda: two_pixels("RGBA", (255, 0, 0, 128), (0, 0, 255, 255)), (255, 127, 127), (0, 0, 255)),
    "RGBa": (lambda: two_pixels("RGBa", (0, 0, 0, 0), (10, 20, 30, 255)), WHITE, (10, 20, 30)),
    "LA": (lambda: two_pixels("LA", (90, 0), (40, 255)), WHITE, (40, 40, 40)),
    "PA": (lambda: with_alpha(palette([(200, 0, 0), (0, 90, 0)]).convert("PA")), WHITE, (0, 90, 0)),
    "P tRNS": (lambda: reopened(palette([(200, 0, 0), (0, 90, 0)]), transparency=0), WHITE, (0, 90, 0)),
    "P RGBA palette": (lambda: palette([(200, 0, 0, 0), (0, 90, 0, 255)], "RGBA"), WHITE, (0, 90, 0)),
    "L tRNS": (lambda: reopened(two_pixels("L", 90, 40), transparency=90), WHITE, (40, 40, 40)),
    "RGB tRNS": (lambda: reopened(two_pixels("RGB", (200, 0, 0), (10, 20, 30)), transparency=(200, 0, 0)),
                 WHITE, (10, 20, 30)),
    "1 tRNS": (lambda: reopened(two_pixels("1", 0, 1), transparency=0), WHITE, WHITE),
    "I;16 tRNS": (lambda: reopened(Image.fromarray(np.array([[1234, 32768]], np.uint16)), transparency=1234),
                  WHITE, (128, 128, 128)),
    "I;16": (lambda: reopened(Image.fromarray(np.array([[0, 32768]], np.uint16))), (0, 0, 0), (128, 128, 128)),
    "I": (lambda: two_pixels("I", 0, 65535), (0, 0, 0), WHITE),
    "F": (lambda: two_pixels("F", 0.0, 100.0), (0, 0, 0), (100, 100, 100)),
    "1": (lambda: two_pixels("1", 0, 1), (0, 0, 0), WHITE),
    "L": (lambda: two_pixels("L", 7, 200), (7, 7, 7), (200, 200, 200)),
    "CMYK": (lambda: two_pixels("CMYK", (0, 255, 255, 0), (0, 0, 0, 255)), (255, 0, 0), (0, 0, 0)),
    "RGBX": (lambda: two_pixels("RGBX", (1, 2, 3, 0), (4, 5, 6, 0)), (1, 2, 3), (4, 5, 6)),
    "YCbCr": (lambda: two_pixels("YCbCr", (128, 128, 128), (255, 128, 128)), (128, 128, 128), WHITE),
    "HSV": (lambda: two_pixels("HSV", (0, 255, 255), (0, 0, 0)), (255, 0, 0), (0, 0, 0)),
}


@pytest.mark.parametrize("name", MODES)
def test_to_rgb_turns_every_mode_into_rgb_over_white(name):
    make, first, second = MODES[name]
    got = to_rgb(make())
    assert got.mode == "RGB" and got.size == (2, 1)
    for x, want in enumerate((first, second)):
        assert all(abs(a - b) <= 1 for a, b in zip(got.getpixel((x, 0)), want)), (x, got.getpixel((x, 0)), want)


def blend(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`colour` [H, W, C] over white with `alpha` [H, W] (0-255), as floats."""
    a = alpha[..., None].astype(np.float64) / 255.0
    return colour * a + 255.0 * (1 - a)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(kind=st.sampled_from(TRANSPARENT_KINDS),
       values=arrays(np.uint8, (3, 5, 4)), key_at=st.tuples(st.integers(0, 2), st.integers(0, 4)))
def test_transparent_pixels_are_white_and_the_rest_blends(kind, values, key_at):
    """Any pixels, any alpha, any transparent colour (tRNS), read back from a PNG: to_rgb is the
    picture composited over white, so what hides under alpha 0 never shows."""
    (im, save), colour, alpha = transparent_picture(kind, values, key_at)
    got = np.asarray(to_rgb(reopened(im, **save)), np.float64)
    assert np.all(np.abs(got - blend(colour, alpha)) <= 1.0)
    assert np.all(got[alpha == 0] == 255)


def transparent_picture(kind: str, values: np.ndarray, key_at: tuple[int, int]):
    """(image, save options), its colour as RGB floats [H, W, 3] and its alpha [H, W] (0-255):
    from random bytes; tRNS kinds make the colour found at `key_at` the transparent one."""
    rgb, a = values[..., :3], values[..., 3]
    if kind == "RGBA":
        return (Image.fromarray(values, "RGBA"), {}), rgb.astype(np.float64), a
    if kind == "LA":
        la = np.stack([rgb[..., 0], a], -1)
        return (Image.fromarray(la, "LA"), {}), np.repeat(rgb[..., :1], 3, -1).astype(np.float64), a
    if kind == "RGB+tRNS":
        key = tuple(int(c) for c in rgb[key_at])
        hidden = np.all(rgb == key, -1)
        return (Image.fromarray(np.ascontiguousarray(rgb), "RGB"), {"transparency": key}), rgb.astype(np.float64), \
            np.where(hidden, 0, 255)
    grey = rgb[..., 0]
    key = int(grey[key_at])
    alpha = np.where(grey == key, 0, 255)
    if kind == "L+tRNS":
        return (Image.fromarray(grey, "L"), {"transparency": key}), np.repeat(grey[..., None], 3, -1).astype(np.float64), alpha
    if kind == "P+tRNS":  # palette entry i is a colour of its own, entry `key` hidden
        pal = Image.new("P", (grey.shape[1], grey.shape[0]))
        pal.putdata(grey.reshape(-1).tolist())
        entries = [(i, 255 - i, (7 * i) % 256) for i in range(256)]
        pal.putpalette([c for e in entries for c in e])
        colour = np.array(entries, np.float64)[grey]
        return (pal, {"transparency": key}), colour, alpha
    assert kind == "I;16+tRNS"
    deep = grey.astype(np.uint16) * 257  # 0-255 -> 0-65535, so to_rgb's scaling gives grey back
    colour = np.repeat(grey[..., None], 3, -1).astype(np.float64)
    return (Image.fromarray(deep), {"transparency": key * 257}), colour, alpha


# ------------------------------------------------------------------ one picture, every loader

def cutout(kind: str) -> tuple[bytes, np.ndarray]:
    """A SIDE x SIDE PNG cut-out and its alpha [SIDE, SIDE]: the left half an opaque smooth
    picture, the right half transparent over noise or a colour that is neither white nor black
    (RGBA and LA: its top quarter half transparent over red). The edge falls on a JPEG block
    edge of the stored image, so its white half stores as flat white."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    smooth = np.stack([60 + x, 200 - y, 64 + (x + y) // 2], -1).astype(np.uint8)  # blue >= 64
    clear = x >= SIDE // 2
    half = clear & (y < SIDE // 4)
    alpha = np.where(clear, np.where(half, 128, 0), 255).astype(np.uint8)
    noise = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    if kind in ("RGBA", "LA"):
        hidden = np.where(half[..., None], np.array([255, 0, 0], np.uint8), noise)
        rgb = np.where(clear[..., None], hidden, smooth)
        if kind == "RGBA":
            return png_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA")), alpha
        return png_bytes(Image.fromarray(np.dstack([rgb[..., 1], alpha]), "LA")), alpha
    alpha = np.where(clear, 0, 255).astype(np.uint8)
    if kind == "RGB+tRNS":
        rgb = np.where(clear[..., None], np.array([255, 0, 0], np.uint8), smooth)
        return png_bytes(Image.fromarray(rgb, "RGB"), transparency=(255, 0, 0)), alpha
    grey = np.where(clear, 7, 40 + (x + y) // 2).astype(np.uint8)  # the opaque half is never 7
    if kind == "L+tRNS":
        return png_bytes(Image.fromarray(grey, "L"), transparency=7), alpha
    if kind == "I;16+tRNS":
        return png_bytes(Image.fromarray(grey.astype(np.uint16) * 257), transparency=7 * 257), alpha
    assert kind == "P+tRNS"
    im = Image.fromarray(grey, "L").convert("P")  # a grey palette, entry 7 grey 7...
    im.putpalette([c for i in range(256) for c in ((255, 0, 0) if i == 7 else (i, i, i))])  # ...now red
    return png_bytes(im, transparency=7), alpha


class Flatten(torch.nn.Module):
    """A stand-in model whose embedding is the normalised picture itself."""

    arch = SimpleNamespace(width=3 * 64 * 64)

    def embed(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs.flatten(1)


def seen_by_every_loader(body: bytes, name: str, tmp_path):
    """The picture in `body` as (crawl's stored image, the folder: target's, the training
    loader's) as int16 arrays [H, W, 3], and the paths of the target file and the stored one."""
    cand = prepare(body, CFG)
    assert not isinstance(cand, Rejection), cand
    crawled = tmp_path / "stored.jpg"
    crawled.write_bytes(cand.data)
    folder = tmp_path / "cutouts"
    folder.mkdir()
    (folder / name).write_bytes(body)
    target = load_target(f"folder:{folder}", tmp_path)
    training = ImageCaptionDataset([ImageRecord(target.train_paths()[0])], np.asarray,
                                   SimpleNamespace(pad_token_id=0), max_tokens=4)
    arrays_ = [np.asarray(Image.open(crawled)), np.asarray(target.train[0][0]), training[0][0]]
    return [a.astype(np.int16) for a in arrays_], target.train_paths()[0], str(crawled)


def at_size(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB picture [H, W, 3] box-filtered to `size` (the crawl's own filter)."""
    return np.asarray(Image.fromarray(picture.astype(np.uint8)).resize(size, Image.Resampling.BOX), np.int16)


def inside(mask: np.ndarray, by: int) -> np.ndarray:
    """`mask` [H, W] less the pixels within `by` of its edge (or of the picture's)."""
    out = mask.copy()
    for axis in (0, 1):
        for shift in range(1, by + 1):
            out &= np.roll(mask, shift, axis) & np.roll(mask, -shift, axis)
    return out


@pytest.mark.parametrize("kind", TRANSPARENT_KINDS)
def test_a_transparent_cutout_is_the_same_picture_crawled_as_a_target_and_in_training(kind, tmp_path):
    body, alpha = cutout(kind)
    (crawl, target, training), target_path, crawled_path = seen_by_every_loader(body, "cutout.png", tmp_path)
    assert np.array_equal(target, training)
    assert target.shape == (SIDE, SIDE, 3) and crawl.shape == (64, 64, 3)
    clear = alpha == 0
    assert np.all(target[clear] == 255), "the hidden colour shows through"
    if kind in ("RGBA", "LA"):  # half transparent over red (LA: over grey 0) blends with white
        half = alpha == 128
        want = (255, 127, 127) if kind == "RGBA" else (127, 127, 127)
        assert np.all(np.abs(target[half] - want) <= 1)
    # the crawl's stored image: the same picture at its size, within JPEG's error
    ref = at_size(target, (64, 64))
    assert np.abs(crawl - ref).mean() < 3
    assert np.all(crawl[inside(clear[::2, ::2], 2)] >= 250)  # (JPEG's chroma blurs the edge itself)
    # what rewards compare: both files through the embedding loader at the stored size
    feats = embed_paths(Flatten(), [target_path, crawled_path], image_size=64)
    assert np.abs(feats[0] - feats[1]).mean() < 0.1  # normalised units: ~6 grey levels


def test_an_exif_turned_photo_is_turned_the_same_by_every_loader(tmp_path):
    """The crawl stands a photo upright by its EXIF orientation; the target and training loaders
    do too, or a target of phone photos lies on its side while the same photos crawled stand."""
    y, x = np.mgrid[0:96, 0:192]
    picture = np.stack([x, np.where(x < 96, 220, 30), np.where(y < 48, 40, 200)], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "JPEG", quality=95, exif=exif.tobytes())
    (crawl, target, training), _, _ = seen_by_every_loader(out.getvalue(), "photo.jpg", tmp_path)
    assert np.array_equal(target, training)
    assert target.shape == (192, 96, 3) and crawl.shape == (128, 64, 3)
    assert np.abs(crawl - at_size(target, (64, 128))).mean() < 4
