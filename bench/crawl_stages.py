"""Where a crawled image's CPU goes, stage by stage, on bench/crawl.py's corpus (no network).

Each image goes `images.prepare_with_embedding`'s way, one stage at a time, in this one thread,
each stage timed in CPU seconds (`time.thread_time`, so a shared machine's load does not count):
header (sniff, parse, checks), decode (libjpeg-turbo DCT-scaled, or Pillow + to_rgb), resize,
encode, sha256, copy hashes (explorer/crawl/decontam.py: made only where the crawl has a target's
test images, `explore run`; `explore fetch` makes none), cheap embedding. Prints the mean per image,
for all images and per kind (JPEG baseline / progressive, PNG, WebP).

    python bench/crawl_stages.py [--workload photo] [--n 2000] [--limit 600]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.config import CrawlConfig  # noqa: E402
from explorer.crawl.allocator import keep_freed_memory  # noqa: E402
from explorer.crawl import images  # noqa: E402
from explorer.crawl.decontam import copy_hashes  # noqa: E402

STAGES = ("header", "decode", "resize", "encode", "sha256", "copy_hash", "embedding")


def stage_times(body: bytes, cfg: CrawlConfig) -> dict[str, float] | None:
    """CPU seconds of each stage for one image, None where prepare would reject it."""
    t: dict[str, float] = {}
    clock = time.thread_time
    c0 = clock()
    fmt = images.sniff(body)
    header = images._open_checked(body, fmt, cfg)
    if isinstance(header, images.Rejection):
        return None
    c1 = clock()
    im = None
    exif_from = header
    if fmt == "JPEG" and header.mode in ("RGB", "L"):
        im = images._turbo_decode(body, *header.size, cfg.image_size)
    if im is None:
        try:
            exif_from = images._pillow_decode(header, body, fmt, cfg)
        except OSError:
            return None
        im = images.to_rgb(exif_from)
    images.exif_orientation(exif_from)
    c2 = clock()
    size = images.stored_size(*header.size, cfg.image_size)
    if size != im.size:
        im = images.resize_area(im, size)
    c3 = clock()
    data = images.encode_jpeg(im, cfg.jpeg_quality)
    c4 = clock()
    hashlib.sha256(data).hexdigest()
    c5 = clock()
    copy_hashes(im)
    c6 = clock()
    images.cheap_embedding(im)
    c7 = clock()
    for name, a, b in zip(STAGES, (c0, c1, c2, c3, c4, c5, c6), (c1, c2, c3, c4, c5, c6, c7)):
        t[name] = b - a
    return t


def kind(meta: dict) -> str:
    if meta["format"] == "JPEG":
        return "JPEG progressive" if meta["progressive"] else "JPEG baseline"
    return meta["format"]


def main() -> None:
    import crawl  # bench/crawl.py: its corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="photo")
    ap.add_argument("--n", type=int, default=2000, help="the corpus bench/crawl.py made (or makes)")
    ap.add_argument("--broken", type=int, default=20)
    ap.add_argument("--limit", type=int, default=600, help="images timed (the first, after the truncated)")
    ap.add_argument("--workdir", type=Path, default=crawl.default_workdir())
    args = ap.parse_args()
    names, metas = crawl.make_corpus(args.workdir, args.n, args.broken, args.workload)
    files = args.workdir / f"files-{args.workload}"
    cfg = CrawlConfig(image_size=256, jpeg_quality=90)
    keep_freed_memory()  # as the fetch workers do: without it, fresh pages for every big buffer
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    images.prepare_with_embedding((files / names[args.broken]).read_bytes(), cfg)  # warm: imports, first calls
    for name, meta in list(zip(names, metas))[args.broken: args.broken + args.limit]:
        t = stage_times((files / name).read_bytes(), cfg)
        if t is None:
            continue
        for group in ("all", kind(meta)):
            counts[group] += 1
            for stage, s in t.items():
                totals[group][stage] += s
    print("CPU ms per image, by stage (" + ", ".join(STAGES) + "), one thread:")
    for group in sorted(counts, key=lambda g: -counts[g]):
        per = {s: 1000 * totals[group][s] / counts[group] for s in STAGES}
        print(f"  {group:17s} n={counts[group]:4d} total {sum(per.values()):6.2f}: "
              + " ".join(f"{s} {v:.2f}" for s, v in per.items()))
    print(json.dumps({g: {s: round(1000 * totals[g][s] / counts[g], 3) for s in STAGES} for g in counts}))


if __name__ == "__main__":
    main()
