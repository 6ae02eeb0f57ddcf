"""Decontamination: does the crawl's leak check catch re-posted copies of target test images?

Test images: pictures of the sandbox targets' test sets (`World(seed).target_image`, the first
--per-class pictures of each class of every target), and photographs cut into tiles: the
three photographs that ship offline with installed packages (scikit-learn's china.jpg and
flower.jpg, matplotlib's grace_hopper.jpg), each cut into a grid of non-overlapping tiles, one
tile in two a test image and the others unrelated pictures.
Copies: each test image re-posted --copies times by every kind of explorer/sandbox/repost.py
(flip, 70-95% crop, grayscale, border, JPEG recompression, resize, small rotation, colour
jitter), parameters drawn from the seed, then saved as the web serves it (JPEG, quality 75-95).
Unrelated: pictures of --unrelated random sandbox concepts (any family, the targets' own
included) and the other photo tiles. Reported apart, not counted in fpr: the same classes'
train pictures (the same drawing of another picture: the hardest negatives there are).

Every image goes the crawl's way: `images.prepare_with_embedding` (what the fetch worker does:
its cheap embedding and copy hashes) and `LeakIndex.match` (what the crawler does) with the
thresholds of CrawlConfig (or --hamming/--cosine). Prints recall per transform, the
false-positive rate, the Hamming distances each side and the recall/fpr per radius (to
calibrate crawl.leak_hamming), the CPU cost of the copy hashes per image beside
prepare_with_embedding's, and as last line `recall=<x> fpr=<y>`.

    .venv/bin/python bench/decontam.py [--seed 0] [--per-class 5] [--copies 2] [--unrelated 300]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import decontam, images  # noqa: E402
from explorer.config import CrawlConfig  # noqa: E402
from explorer.decontam import LeakIndex  # noqa: E402
from explorer.sandbox.repost import KINDS, repost  # noqa: E402
from explorer.sandbox.world import World  # noqa: E402

TILES = (5, 4)  # a photograph cut into 5 x 4 tiles


def photographs() -> list[Image.Image]:
    """The photographs installed packages ship (none where neither package has them)."""
    out = []
    try:
        from sklearn.datasets import load_sample_images

        out += [Image.fromarray(a) for a in load_sample_images().images]
    except (ImportError, OSError):
        pass
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            out.append(Image.open(f).convert("RGB"))
    except (ImportError, OSError, ValueError):
        pass
    return out


def tiles(photo: Image.Image) -> list[Image.Image]:
    w, h = photo.size
    tw, th = w // TILES[0], h // TILES[1]
    return [photo.crop((i * tw, j * th, (i + 1) * tw, (j + 1) * th)) for i in range(TILES[0]) for j in range(TILES[1])]


def as_served(im: Image.Image, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.randint(75, 95))
    return buf.getvalue()


def prepared(bodies: list[bytes], cfg: CrawlConfig) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """What the fetch worker sends for the images it keeps: cheap vectors [n, 768] and copy hashes
    [n][K, HASH_BYTES]; and [N] bool, which were kept (a copy shrunk under crawl.min_side is
    rejected before any leak check: it cannot leak)."""
    vecs, hashes, kept = [], [], []
    for body in bodies:
        result = images.prepare_with_embedding(body, cfg)
        kept.append(not isinstance(result, images.Rejection))
        if kept[-1]:
            cand, vec = result
            vecs.append(vec)
            hashes.append(np.frombuffer(cand.copy_hash, np.uint8).reshape(-1, decontam.HASH_BYTES))
    return np.stack(vecs), hashes, np.asarray(kept)


def cpu_us(fn, items, repeats: int = 3) -> float:
    """Least CPU microseconds per item over `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for x in items:
            fn(x)
        best = min(best, (time.process_time() - start) / len(items) * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=5, help="test pictures per class of each sandbox target")
    ap.add_argument("--copies", type=int, default=2, help="copies of each test image per transform")
    ap.add_argument("--unrelated", type=int, default=300, help="pictures of random sandbox concepts")
    ap.add_argument("--hamming", type=int, default=100, help="crawl.leak_hamming to measure (off by default in a run)")
    ap.add_argument("--cosine", type=float, default=None, help="default: CrawlConfig().leak_threshold")
    args = ap.parse_args()
    cfg = CrawlConfig()
    hamming = args.hamming
    cfg = dataclasses.replace(cfg, leak_hamming=hamming)
    cosine = cfg.leak_threshold if args.cosine is None else args.cosine
    rng = random.Random(args.seed)
    world = World(args.seed)

    started = time.perf_counter()
    tests, same_class = [], []
    for target in world.target_names:
        for y in range(len(world.target_classes(target))):
            tests += [world.target_image(target, "test", y, i) for i in range(args.per_class)]
            same_class.append(world.target_image(target, "train", y, 0))
    photo_tiles = [t for p in photographs() for t in tiles(p)]
    rng.shuffle(photo_tiles)
    tests += photo_tiles[0::2]
    unrelated = [world.render(f"c{rng.randrange(len(world.concepts))}v{rng.randrange(world.images_per_concept)}")
                 for _ in range(args.unrelated)] + photo_tiles[1::2]

    t0 = time.perf_counter()
    leak = LeakIndex.from_images(tests, images.cheap_embedding)
    index_s = time.perf_counter() - t0

    copies, kinds = [], []
    for im in tests:
        for kind in KINDS:
            for _ in range(args.copies):
                copies.append(as_served(repost(im, kind, random.Random(rng.random())), rng))
                kinds.append(kind)
    cv, ch, kept = prepared(copies, cfg)
    kinds, copies = np.asarray(kinds)[kept], [c for c, k in zip(copies, kept) if k]
    uv, uh, _ = prepared([as_served(im, rng) for im in unrelated], cfg)
    sv, sh, _ = prepared([as_served(im, rng) for im in same_class], cfg)

    def caught(vecs, hashes):
        return np.asarray([r is not None for r in leak.match(vecs, hashes, cosine, hamming)])

    hit, false, same = caught(cv, ch), caught(uv, uh), caught(sv, sh)
    print(f"test images: {len(tests)} ({len(tests) - len(photo_tiles[0::2])} sandbox, "
          f"{len(photo_tiles[0::2])} photo tiles); leak index: {leak.hashes.ntotal} hashes, built in {index_s:.1f} s")
    print(f"copies: {len(copies)} ({np.sum(~kept)} more rejected by prepare, e.g. too small); unrelated: {len(unrelated)} ({args.unrelated} sandbox, "
          f"{len(photo_tiles[1::2])} photo tiles); crawl.leak_hamming={hamming}, crawl.leak_threshold={cosine}")
    print("\nrecall per transform (hash or cosine; hash alone; cosine alone)")
    by_hash = leak.distances(np.stack(ch)) <= hamming
    by_cos = leak.vectors.max_similarity(cv) >= cosine
    for kind in KINDS:
        m = kinds == kind
        print(f"  {kind:10s} {hit[m].mean():.3f}   {by_hash[m].mean():.3f}   {by_cos[m].mean():.3f}")

    dc, du = leak.distances(np.stack(ch)), leak.distances(np.stack(uh))
    print("\nHamming distance to the nearest test hash (of", decontam.HASH_BITS, "bits), percentiles 1/5/50/95/99:")
    print("  copies   ", np.percentile(dc, [1, 5, 50, 95, 99]).round(0).tolist())
    print("  unrelated", np.percentile(du, [1, 5, 50, 95, 99]).round(0).tolist(), " lowest:", np.sort(du)[:5].tolist())
    print("  radius  recall(hash alone)  fpr(hash alone)")
    for r in range(100, 301, 20):
        print(f"  {r:6d}  {np.mean(dc <= r):18.3f}  {np.mean(du <= r):15.3f}")
    print(f"fpr of each check alone: hash {np.mean(du <= hamming):.3f}, cosine "
          f"{np.mean(leak.vectors.max_similarity(uv) >= cosine):.3f}")
    print(f"\nsame classes' train pictures caught (not counted in fpr): {same.mean():.3f} of {len(same)}")

    stored = [images.load_rgb(io.BytesIO(b)) for b in copies[:200]]
    stored = [im.resize(images.stored_size(*im.size, cfg.image_size)) for im in stored]
    hash_us = cpu_us(decontam.copy_hashes, stored)
    prepare_us = cpu_us(lambda b: images.prepare_with_embedding(b, cfg), copies[:200])
    print(f"CPU per image: copy_hashes {hash_us:.0f} us of prepare_with_embedding's {prepare_us:.0f} us "
          f"({hash_us / prepare_us:.0%}); bench took {time.perf_counter() - started:.0f} s")
    print(f"recall={hit.mean():.3f} fpr={false.mean():.3f}")


if __name__ == "__main__":
    main()
