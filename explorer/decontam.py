"""Decontamination: the web's copies of the target's *test* images are never kept (ARCHITECTURE.md,
"One round": the crawl's dedupe).

A re-posted picture is rarely the same bytes: it is flipped, cropped, greyed, framed with a
border, recompressed, resized, turned a little or recoloured. Two signatures find it:

- the copy hash of every crawled image, made in the fetch worker beside the cheap embedding
  (`copy_hashes`): the luminance only (grey and recoloured copies keep it), squashed to a
  32x32 square (resized and stretched copies keep it), as a band of its detail (a
  difference of Gaussians: neither its overall light nor its pixel noise), one bit per
  pixel: whether the detail there is positive. Two of them: the picture as it is, and with uniform borders trimmed.
- `LeakIndex`, made once per run from the target's test images alone (and the crawl's cheap
  embedding, handed in: images.py imports this module, not the other way): the copy hashes of each
  test image under the transforms a copy may have undone, itself, crops (a grid of windows,
  each side 70-100% anywhere), small rotations, and the mirror of each, in a FAISS binary
  index (Hamming distance). A crawled image within crawl.leak_hamming bits of any of them, or
  at cosine >= crawl.leak_threshold to a test image's cheap embedding (the older check, for
  what the hash misses), is a test leak.

bench/decontam.py measures recall per transform and the false-positive rate on unrelated
pictures, and calibrates crawl.leak_hamming.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

HASH_SIDE = 32                 # the hashed square, in pixels
HASH_BITS = HASH_SIDE * HASH_SIDE
HASH_BYTES = HASH_BITS // 8
WORK_SIDE = 64                 # the grey square on which borders are found
PRE_SIGMA = 1.0                # detail = the picture blurred this much (in HASH_SIDE pixels: a crop
BLUR_SIGMA = 3.0               # window a pixel off still agrees) minus it blurred this much
DETAIL_MIN = 0.5               # a bit is set where the detail is above this many grey levels:
                               # flat areas hash to 0, not to the sign of their rounding noise
BORDER_TOL = 8.0               # a border line: its grey levels within 2x this of each other and
                               # its mean within this of the outermost line's
BORDER_MAX = 0.5               # borders over this share of a side are the picture, not a frame
# crop windows, per axis: (share of the side kept, positions from one edge to the other)
CROP_GRID = ((1.0, 1), (0.9, 3), (0.8, 3), (0.7, 4))
ROTATIONS = (-5.0, -2.5, 2.5, 5.0)   # degrees


@lru_cache(maxsize=None)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] Gaussian blur along one axis (rows renormalised at the edges): B @ x @ B.T blurs x."""
    i = np.arange(n, dtype=np.float64)
    b = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    b[b < 1e-4] = 0  # cut at ~4 sigma: the tail's denormal float32s make each product far slower
    return (b / b.sum(axis=1, keepdims=True)).astype(np.float32)


def grey_square(im: Image.Image, side: int = WORK_SIDE, box: Sequence[float] | None = None) -> np.ndarray:
    """[side, side] float32 luminance of `im` (RGB, RGBX or L), or of its `box`, squashed to a square
    (shrunk in colour first: converting the small square is cheaper than the whole picture)."""
    small = im.resize((side, side), Image.Resampling.BOX, box=box, reducing_gap=1.0)
    return np.asarray(small if small.mode in ("L", "F") else small.convert("L"), np.float32)


def trim_borders(g: np.ndarray) -> np.ndarray:
    """`g` [H, W] without its uniform border lines (a frame, a letterbox), each side judged on its
    own, and the line beyond that blends border and picture; all of it when the "borders" would
    take over half a side (a flat picture)."""
    h, w = g.shape
    if not _flat_lines(np.stack([g[0], g[-1], g[:, 0], g[:, -1]]), axis=1)[0].any():
        return g  # (most photographs: no edge is flat, nothing to trim)
    rows, cols = _flat_lines(g, axis=1), _flat_lines(g, axis=0)
    top, bottom = _border(*rows), _border(*(a[::-1] for a in rows))
    left, right = _border(*cols), _border(*(a[::-1] for a in cols))
    if top + bottom > BORDER_MAX * h or left + right > BORDER_MAX * w:
        return g
    return g[top:h - bottom, left:w - right]


def _flat_lines(g: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per line of `g` (rows: axis=1): whether its grey levels are within 2 * BORDER_TOL of each
    other, and its mean."""
    return g.max(axis=axis) - g.min(axis=axis) <= 2 * BORDER_TOL, g.mean(axis=axis)


def _border(flat: np.ndarray, mean: np.ndarray) -> int:
    """How many lines from the start are a border: flat, of the outermost line's level (and one
    more, which blends it into the picture); 0 where the outermost line is not flat."""
    ok = flat & (np.abs(mean - mean[0]) <= BORDER_TOL)
    n = len(ok) if ok.all() else int(np.argmin(ok))
    return n + 1 if n else 0


def hash_grey(g: np.ndarray) -> np.ndarray:
    """[HASH_BYTES] uint8: where a grey picture's detail is positive, on a HASH_SIDE square."""
    if g.shape != (WORK_SIDE, WORK_SIDE):  # (trimmed)
        g = np.asarray(Image.fromarray(np.ascontiguousarray(g, np.float32), "F")
                       .resize((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX), np.float32)
    fine, coarse = _detail_matrices()
    return np.packbits((fine @ g @ fine.T - coarse @ g @ coarse.T) > DETAIL_MIN)


@lru_cache(maxsize=None)
def _detail_matrices() -> tuple[np.ndarray, np.ndarray]:
    """[HASH_SIDE, WORK_SIDE] each: WORK_SIDE -> HASH_SIDE by means of neighbours, then the fine
    and the coarse blur: M @ g @ M.T is g shrunk and blurred."""
    shrink = np.kron(np.eye(HASH_SIDE, dtype=np.float32), np.full((1, WORK_SIDE // HASH_SIDE),
                                                                   HASH_SIDE / WORK_SIDE, np.float32))
    return _blur_matrix(HASH_SIDE, PRE_SIGMA) @ shrink, _blur_matrix(HASH_SIDE, BLUR_SIGMA) @ shrink


def copy_hashes(im: Image.Image) -> np.ndarray:
    """[2, HASH_BYTES] uint8 copy hashes of a crawled image: as it is, and its borders trimmed."""
    g = grey_square(im)
    whole, trimmed = hash_grey(g), trim_borders(g)
    return np.stack([whole, whole if trimmed is g else hash_grey(trimmed)])


def crop_windows() -> list[tuple[float, float, float, float]]:
    """The crop grid, as (left, top, right, bottom) shares of the picture."""
    spans = [(off, off + keep) for keep, n in CROP_GRID
             for off in ((1 - keep) * (i / (n - 1) if n > 1 else 0.5) for i in range(n))]
    return [(x0, y0, x1, y1) for x0, x1 in spans for y0, y1 in spans]


def target_hashes(im: Image.Image) -> np.ndarray:
    """[V, HASH_BYTES] uint8: the copy hashes of one test image under the transforms a copy may
    have undone (crop windows, small rotations, its trimmed self) and their mirrors."""
    im = im.convert("RGB")
    whole = grey_square(im)  # (made as copy_hashes makes it: an exact copy hashes the same)
    # the views from a grey copy of at most 4 WORK_SIDE a side: a big test image costs no more
    grey = im.convert("L")
    grey = grey.resize((min(grey.width, 4 * WORK_SIDE), min(grey.height, 4 * WORK_SIDE)), Image.Resampling.BOX)
    w, h = grey.size
    views = [whole if (x0, y0, x1, y1) == (0, 0, 1, 1) else grey_square(grey, box=(x0 * w, y0 * h, x1 * w, y1 * h))
             for x0, y0, x1, y1 in crop_windows()]
    fill = int(np.asarray(grey).mean())
    views += [grey_square(grey.rotate(angle, Image.Resampling.BICUBIC, fillcolor=fill)) for angle in ROTATIONS]
    views.append(trim_borders(whole))
    hashes = [hash_grey(v) for v in views] + [hash_grey(v[:, ::-1]) for v in views]
    return np.stack(hashes)


class LeakIndex:
    """The target's test images, as their cheap embeddings and their copy hashes; `match` says
    which crawled images are copies of one. A pure function of the test images."""

    def __init__(self, vectors: np.ndarray, hashes: np.ndarray, owners: np.ndarray) -> None:
        """vectors: [T, 768] cheap embeddings; hashes: [H, HASH_BYTES] uint8; owners: [H], the test
        image (row of `vectors`) each hash was made from."""
        import faiss  # (not in the fetch workers, which only hash)

        from cache.index import VectorIndex

        self.vectors = VectorIndex.from_vectors(vectors)
        self.owners = np.asarray(owners, np.int64)
        self.hashes = faiss.IndexBinaryFlat(HASH_BITS)
        if len(hashes):
            self.hashes.add(np.ascontiguousarray(hashes, np.uint8))

    @classmethod
    def from_images(cls, images: Iterable[Image.Image], embed: Callable[[Image.Image], np.ndarray],
                    hashes: bool = True) -> "LeakIndex":
        """`embed`: the crawl's cheap embedding of an image (explorer.images.cheap_embedding),
        handed in, as this module is what images.py calls for the copy hashes.
        `hashes=False`: the cheap embeddings only (crawl.leak_hamming=-1, the copy hash off)."""
        vectors, views, owners = [], [], []
        for i, im in enumerate(images):
            vectors.append(embed(im))
            views.append(target_hashes(im) if hashes else np.zeros((0, HASH_BYTES), np.uint8))
            owners.append(np.full(len(views[-1]), i))
        if not vectors:
            raise ValueError("a leak index needs at least one test image")
        return cls(np.stack(vectors), np.concatenate(views), np.concatenate(owners))

    def __len__(self) -> int:
        return len(self.vectors)

    def distances(self, hashes: np.ndarray) -> np.ndarray:
        """[N, K, HASH_BYTES] copy hashes -> [N] fewest bits between any of an image's hashes and
        any test hash (HASH_BITS + 1 for an image without hashes)."""
        hashes = np.asarray(hashes, np.uint8)
        n = len(hashes)
        if n == 0 or hashes.size == 0 or self.hashes.ntotal == 0:
            return np.full(n, HASH_BITS + 1, np.int64)
        d, _ = self.hashes.search(np.ascontiguousarray(hashes.reshape(-1, HASH_BYTES)), 1)
        return d[:, 0].reshape(n, -1).min(axis=1).astype(np.int64)

    def match(self, vectors: np.ndarray, hashes: Sequence[np.ndarray | None], cosine: float,
              hamming: int) -> list[str | None]:
        """Per crawled image (its cheap vector [768] and copy hashes [K, HASH_BYTES], or None where it
        has none): why it is a copy of a test image, or None."""
        n = len(vectors)
        sims = self.vectors.max_similarity(np.asarray(vectors, np.float32)) if n else np.zeros(0)
        dist = np.full(n, HASH_BITS + 1, np.int64)
        have = [i for i, h in enumerate(hashes) if h is not None and np.size(h)]
        if have:
            dist[have] = self.distances(np.stack([np.asarray(hashes[i], np.uint8) for i in have]))
        out: list[str | None] = []
        for sim, d in zip(sims, dist):
            if d <= hamming:
                out.append(f"copy hash {d}/{HASH_BITS} bits from a target test image's")
            elif sim >= cosine:
                out.append(f"cosine {sim:.3f} to a target test image")
            else:
                out.append(None)
        return out
