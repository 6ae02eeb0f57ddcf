"""How the web re-posts a picture: the transformed copies that decontamination must still catch.

`repost(img, kind, rng)` makes one copy of an RGB picture by one of `KINDS`, its parameters drawn
from `rng` (a random.Random), so that a seeded caller gets the same copy every time. The sandbox
world serves its leaks of target test images this way (world.py), and bench/decontam.py and
tests/test_decontam.py measure the crawl's leak check on them.
"""
from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KINDS = ("flip", "crop", "grayscale", "border", "jpeg", "resize", "rotate", "jitter")
CROP = (0.70, 0.95)            # a crop keeps this share of each side, anywhere in the picture
BORDER = (0.03, 0.10)          # each side padded by this share of the picture's side
JPEG_QUALITY = (15, 50)        # heavy recompression
RESIZE = ((0.5, 0.9), (1.25, 2.0))  # down or up by one of these factors ...
STRETCH = (0.8, 1.25)          # ... and the height by this much more (the aspect changed a little)
ROTATE_DEG = (2.0, 7.0)        # either way; the corners show a flat fill
JITTER = {"brightness": (0.7, 1.3), "contrast": (0.7, 1.3), "saturation": (0.5, 1.5)}
HUE = 0.05                     # hue shifted by up to this share of the colour circle


def repost(img: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """A copy of RGB `img` made by `kind` (one of KINDS), as RGB."""
    img = img.convert("RGB")
    w, h = img.size
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "crop":
        cw, ch = round(w * rng.uniform(*CROP)), round(h * rng.uniform(*CROP))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch))
    if kind == "grayscale":
        return img.convert("L").convert("RGB")
    if kind == "border":
        left, right = (round(w * rng.uniform(*BORDER)) for _ in range(2))
        top, bottom = (round(h * rng.uniform(*BORDER)) for _ in range(2))
        return ImageOps.expand(img, (left, top, right, bottom), fill=_flat_colour(rng))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=rng.randint(*JPEG_QUALITY))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize":
        fx = rng.uniform(*RESIZE[rng.random() < 0.5])
        fy = fx * rng.uniform(*STRETCH)
        return img.resize((max(1, round(w * fx)), max(1, round(h * fy))), Image.Resampling.BICUBIC)
    if kind == "rotate":
        angle = rng.uniform(*ROTATE_DEG) * rng.choice((-1, 1))
        return img.rotate(angle, Image.Resampling.BICUBIC, fillcolor=_flat_colour(rng))
    if kind == "jitter":
        for name, (lo, hi) in JITTER.items():
            enhancer = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast,
                        "saturation": ImageEnhance.Color}[name]
            img = enhancer(img).enhance(rng.uniform(lo, hi))
        return _shift_hue(img, rng.uniform(-HUE, HUE))
    raise ValueError(f"unknown re-post kind {kind!r}; choose from {', '.join(KINDS)}")


def _flat_colour(rng: random.Random) -> tuple[int, int, int]:
    """White, black or any colour: what borders and rotated corners are filled with."""
    u = rng.random()
    if u < 1 / 3:
        return (255, 255, 255)
    if u < 2 / 3:
        return (0, 0, 0)
    return tuple(rng.randint(0, 255) for _ in range(3))


def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """`img` with every hue turned by `shift` of the circle (Pillow's HSV: hue in 0..255)."""
    h, s, v = img.convert("HSV").split()
    turned = (np.asarray(h, dtype=np.int16) + round(shift * 256)) % 256
    return Image.merge("HSV", (Image.fromarray(turned.astype(np.uint8), "L"), s, v)).convert("RGB")
