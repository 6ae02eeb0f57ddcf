"""bench/crawl.py's images: `photo` (as costly to decode as the web's photographs) and `smooth`
(the earlier workload, smooth colour fields under a light grain, kept for comparison).

A JPEG's decode cost is mostly its entropy-coded bits (Huffman decoding runs over every one of
them, DCT scaling or not), so `photo` matches real photographs' statistics where they set that
cost: bits per pixel (~1.0-1.6 at the median), the quality mix (80-95), the share of progressive
files (~15%: a progressive decode makes several passes) and some PNG (~10%) and WebP (~5%),
which no DCT scaling helps. Its texture is 1/f noise (the spectrum of natural images: detail at
every scale, amplitude falling with frequency), a sensor's grain on top, and colour that varies
more slowly than light (as in photographs). `workload_stats` summarises what was made, so that a
reader can check it against what the web serves (issue #21, item 6: on a second workload of real-
like photos explore's lead was 1.9x, not the 3x measured on `smooth`).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

WORKLOADS = ("photo", "smooth")
SIDES = (300, 1201)          # each side drawn from [300, 1200] px
PNG_SHARE = 0.10
WEBP_SHARE = 0.05
PROGRESSIVE_SHARE = 0.15     # of the JPEGs
QUALITIES = (80, 96)         # JPEG quality drawn from [80, 95]
WEBP_QUALITIES = (75, 91)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def pink_noise(rng: np.random.Generator, w: int, h: int, slope: float = 1.0) -> np.ndarray:
    """[h, w] float32, zero mean, unit spread: octaves of Gaussian noise, each twice finer than the
    last and weaker by 2**slope (slope 1: a 1/f amplitude spectrum, as natural images have)."""
    out = np.zeros((h, w), np.float32)
    longest, side = max(w, h), 4
    while side < 2 * longest:
        octave = rng.standard_normal((max(2, round(h * side / longest)), max(2, round(w * side / longest))))
        up = Image.fromarray(octave.astype(np.float32), "F").resize((w, h), Image.Resampling.BICUBIC)
        out += (longest / side) ** slope * np.asarray(up)
        side *= 2
    return (out - out.mean()) / (out.std() + 1e-6)


def photo_image(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """An RGB picture with a photograph's texture: light as 1/f noise plus grain, colour smoother."""
    light = 128 + 45 * pink_noise(rng, w, h) + 3 * rng.standard_normal((h, w), dtype=np.float32)
    chroma = [np.asarray(Image.fromarray(128 + 20 * pink_noise(rng, max(2, w // 8), max(2, h // 8), 1.2), "F")
                         .resize((w, h), Image.Resampling.BICUBIC)) for _ in range(2)]
    ycc = np.clip(np.stack([light, *chroma], -1), 0, 255).astype(np.uint8)
    return Image.fromarray(ycc, "YCbCr").convert("RGB")


def make_photo(seed: int) -> tuple[bytes, dict]:
    """One `photo` image's file and what it is: {format, width, height, quality, progressive, bytes}."""
    rng = np.random.default_rng(seed)
    w, h = (int(x) for x in rng.integers(*SIDES, 2))
    im = photo_image(rng, w, h)
    draw = rng.random()
    out = io.BytesIO()
    meta = {"width": w, "height": h, "quality": None, "progressive": False}
    if draw < PNG_SHARE:
        im.save(out, "PNG")
        meta["format"] = "PNG"
    elif draw < PNG_SHARE + WEBP_SHARE:
        meta |= {"format": "WEBP", "quality": int(rng.integers(*WEBP_QUALITIES))}
        im.save(out, "WEBP", quality=meta["quality"])
    else:
        meta |= {"format": "JPEG", "quality": int(rng.integers(*QUALITIES)),
                 "progressive": bool(rng.random() < PROGRESSIVE_SHARE)}
        im.save(out, "JPEG", quality=meta["quality"], progressive=meta["progressive"], optimize=meta["progressive"])
    return out.getvalue(), meta | {"bytes": out.tell()}


def make_smooth(seed: int) -> tuple[bytes, dict]:
    """The earlier workload's JPEG: smooth colour fields plus fine noise, quality 90, baseline."""
    rng = np.random.default_rng(seed)
    w, h = (int(x) for x in rng.integers(*SIDES, 2))
    base = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    grain = Image.fromarray(rng.integers(0, 256, (h // 6, w // 6, 3), dtype=np.uint8)).resize((w, h))
    out = io.BytesIO()
    Image.blend(base, grain, 0.25).save(out, "JPEG", quality=90)
    return out.getvalue(), {"format": "JPEG", "width": w, "height": h, "quality": 90, "progressive": False,
                            "bytes": out.tell()}


def make_image(args: tuple[str, int]) -> tuple[bytes, dict]:
    """(workload, seed) -> (file bytes, what it is); a picklable pool task."""
    workload, seed = args
    return make_photo(seed) if workload == "photo" else make_smooth(seed)


def workload_stats(metas: list[dict]) -> dict:
    """What a reader checks a workload against the web's photographs by: median bytes, JPEG bits
    per pixel (median and 10th-90th percentiles), the quality mix, the shares by format and of
    progressive JPEGs."""
    jpegs = [m for m in metas if m["format"] == "JPEG"]
    bpp = np.array([8 * m["bytes"] / (m["width"] * m["height"]) for m in jpegs]) if jpegs else np.zeros(1)
    qualities = np.array([m["quality"] for m in jpegs]) if jpegs else np.zeros(1)
    return {
        "images": len(metas),
        "median_kB": float(np.median([m["bytes"] for m in metas])) / 1000,
        "median_kB_jpeg": float(np.median([m["bytes"] for m in jpegs])) / 1000 if jpegs else 0.0,
        "megapixels_median": float(np.median([m["width"] * m["height"] for m in metas])) / 1e6,
        "jpeg_bpp_median": float(np.median(bpp)),
        "jpeg_bpp_p10": float(np.percentile(bpp, 10)),
        "jpeg_bpp_p90": float(np.percentile(bpp, 90)),
        "quality_range": (int(qualities.min()), int(qualities.max())),
        "share_jpeg": len(jpegs) / len(metas),
        "share_png": sum(m["format"] == "PNG" for m in metas) / len(metas),
        "share_webp": sum(m["format"] == "WEBP" for m in metas) / len(metas),
        "share_progressive_of_jpeg": sum(m["progressive"] for m in jpegs) / max(1, len(jpegs)),
    }


def format_stats(s: dict) -> str:
    return (f"{s['images']} images: median {s['median_kB']:.0f} kB (JPEG {s['median_kB_jpeg']:.0f} kB), "
            f"median {s['megapixels_median']:.2f} MP; JPEG {s['jpeg_bpp_median']:.2f} bits/pixel "
            f"(p10-p90 {s['jpeg_bpp_p10']:.2f}-{s['jpeg_bpp_p90']:.2f}), quality {s['quality_range'][0]}-"
            f"{s['quality_range'][1]}; JPEG {s['share_jpeg']:.0%} ({s['share_progressive_of_jpeg']:.0%} of them "
            f"progressive), PNG {s['share_png']:.0%}, WebP {s['share_webp']:.0%}")
