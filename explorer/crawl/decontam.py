"""Decontamination: the web's copies of the target's *test* images are never kept (ARCHITECTURE.md,
"One round": the crawl's dedupe).

A re-posted picture is rarely the same bytes: it is flipped, cropped, greyed, framed with a
border, recompressed, resized, turned a little or recoloured. Two signatures find it:

- the copy hash of every crawled image, made in the fetch worker beside the cheap embedding
  (`copy_hashes`): the luminance only (grey and recoloured copies keep it), squashed to a
  32x32 square (resized and stretched copies keep it), as a band of its detail (a
  difference of Gaussians: neither its overall light nor its pixel noise), one bit per
  pixel: whether the detail there is positive. Two of them: the picture as it is, and with
  uniform borders trimmed.
- `LeakIndex`, made once per run from the target's test images alone (and the crawl's cheap
  embedding, handed in: images.py imports this module, not the other way). A crawled image is
  judged in two stages:
  1. *candidates*: the copy hashes of each test image under the transforms a copy may have
     undone (views: a grid of crop windows, each side 70-100% anywhere, small rotations, its
     trimmed self, and the mirror of each) sit in a FAISS binary index; the test images with a
     view within crawl.leak_hamming bits of one of the crawled image's hashes are candidates.
     The radius is loose: a crop between two windows of the grid is far from both.
  2. *verification*: the candidates' nearest views are compared with the crawled hash where it
     counts: each pixel's disagreement weighted by the strength of the test image's detail
     there (`mismatch`: 0 the same, about 0.5 unrelated), so flat areas, where a copy's bits are
     noise, weigh nothing. Close but not close enough, the best of them is *refined*: its window's edges
     and angle are moved, a step at a time, to the place where the crawled image was cut from.
     A copy is a mismatch of at most crawl.leak_mismatch (a refined view: REFINED_SHARE of it).
  3. *colour*: the hash is blind to colour, so another picture drawn like a test image (the same
     kind of flower, centred, at another scale) can pass it. Where both the crawled image and
     the matched view have colour, their chroma fields (red-green, blue-yellow of the cheap
     embedding's 16x16 thumbnail, and of the test image's colour copy cut by the view) must
     agree to COLOUR_AGREE (a cosine: a copy's recoloured by jitter or recompressed still
     agrees; a grey copy has no chroma and is not checked, nor a tinted one whose chroma lies along
     one line, as sepia's does). A copy found by its trimmed hash (a framed copy, the frame's
     colour in its thumbnail) is not checked either.
  A crawled image at cosine >= crawl.leak_threshold to a test image's cheap embedding (the older
  check, for what the hash misses) is a test leak too.

bench/decontam.py measures recall per transform and the false-positive rate on unrelated
pictures, and calibrates both thresholds.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, NamedTuple, Sequence

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
VERIFY_SIDE = 96               # each test image's grey copy, kept to cut views from, px a side at most
CANDIDATES = 3                 # test images verified per crawled image, the nearest by Hamming distance,
VIEWS_EACH = 4                 # each by its views this near; the view that agrees best is the verdict's
REFINE_BELOW = 0.16            # a view this close (mismatch) is refined (one a crawled image at most);
                               # farther, it is another picture
REFINE_STEPS = (0.04, 0.02, 0.01)  # a window edge moves by these shares of the side (the angle: x100 degrees)
REFINE_EVALS = 160             # views tried per refinement at most
REFINED_SHARE = 0.6            # a refined view must agree this much closer: its window and angle were
                               # fitted to the crawled image (5 free numbers), and near-alike pictures fit
MIN_KEEP = 0.5                 # a refined window keeps at least this share of each side
FLAT_DETAIL = 0.5              # a view whose mean |detail| is under this (grey levels) cannot be verified
FLAT_INDEX_MAX = 5_000         # views searched one by one up to this many (a few test images); past it,
CODES_PER_LIST = 150           # in inverted lists of about this many views, at most IVF_LISTS lists,
IVF_LISTS = 1_024              # of which IVF_PROBE are searched (the near views of a copy share a list
IVF_PROBE = 16                 # or its neighbours; bench/decontam.py measures what the lists miss)
COLOUR_SIDE = 48               # each test image's colour copy, px a side at most, for the colour check
COLOUR_AGREE = 0.85            # a copy's chroma field agrees with its view's at least this much (cosine)
GREY_CHROMA = 0.25             # a unit-norm thumbnail with less chroma than this is grey (or near: JPEG
                               # and rounding noise there point every way): not checked
ONE_HUE = 0.1                  # nor one whose chroma lies along one line this closely (its second singular
                               # value over its first): a tinted copy (sepia, duotone) has lost its colours
CHROMA_SIDE = 16               # the cheap embedding's thumbnail side (images.EMBED_SIDE)
CHROMA_POOL = 2                # compared in blocks of this many pixels a side (a view a little off still agrees)
TURNED_MARGIN = 2              # a turned view's outer pixels (its corners: the copy's own fill) not compared


@lru_cache(maxsize=None)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] Gaussian blur along one axis (rows renormalised at the edges): B @ x @ B.T blurs x."""
    i = np.arange(n, dtype=np.float64)
    b = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    b[b < 1e-4] = 0  # cut at ~4 sigma: the tail's denormal float32s make each product far slower
    return (b / b.sum(axis=1, keepdims=True)).astype(np.float32)


def grey_square(im: Image.Image, side: int = WORK_SIDE, box: Sequence[float] | None = None) -> np.ndarray:
    """[side, side] float32 luminance of `im` (RGB, RGBX or L), or of its `box`, squashed to a square.
    Made grey first, then shrunk: for a crawled image (256 px a side) one channel to average instead
    of four saves more than the conversion costs (165 against 247 us an image; within a grey level of
    shrinking in colour first, 1.3 of 1024 hash bits apart: bench/decontam.py measured both)."""
    if im.mode not in ("L", "F"):
        im = im.convert("L")
    return np.asarray(im.resize((side, side), Image.Resampling.BOX, box=box, reducing_gap=1.0), np.float32)


def trim_borders(g: np.ndarray) -> np.ndarray:
    """`g` [H, W] without its uniform border lines (a frame, a letterbox), each side judged on its
    own, and the line beyond that blends border and picture; all of it when the "borders" would
    take over half a side (a flat picture)."""
    top, bottom, left, right = border_lines(g)
    h, w = g.shape
    return g if top == bottom == left == right == 0 else g[top:h - bottom, left:w - right]


def border_lines(g: np.ndarray) -> tuple[int, int, int, int]:
    """How many lines of `g` [H, W] trim_borders cuts from the top, bottom, left and right."""
    h, w = g.shape
    if not _flat_lines(np.stack([g[0], g[-1], g[:, 0], g[:, -1]]), axis=1)[0].any():
        return 0, 0, 0, 0  # (most photographs: no edge is flat, nothing to trim)
    rows, cols = _flat_lines(g, axis=1), _flat_lines(g, axis=0)
    top, bottom = _border(*rows), _border(*(a[::-1] for a in rows))
    left, right = _border(*cols), _border(*(a[::-1] for a in cols))
    if top + bottom > BORDER_MAX * h or left + right > BORDER_MAX * w:
        return 0, 0, 0, 0
    return top, bottom, left, right


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


def detail(g: np.ndarray) -> np.ndarray:
    """[HASH_SIDE, HASH_SIDE] float32: a grey picture's band of detail (fine blur minus coarse
    blur), on a HASH_SIDE square, in grey levels."""
    if g.shape != (WORK_SIDE, WORK_SIDE):  # (trimmed)
        g = np.asarray(Image.fromarray(np.ascontiguousarray(g, np.float32), "F")
                       .resize((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX), np.float32)
    fine, coarse = _detail_matrices()
    return fine @ g @ fine.T - coarse @ g @ coarse.T


def hash_grey(g: np.ndarray) -> np.ndarray:
    """[HASH_BYTES] uint8: where a grey picture's detail is positive, on a HASH_SIDE square."""
    return np.packbits(detail(g) > DETAIL_MIN)


def mismatch(view: np.ndarray, bits: np.ndarray, valid: np.ndarray | None = None) -> float:
    """How far a crawled image's copy hash (`bits`: [HASH_BITS] bool) is from a test view's detail
    ([HASH_SIDE, HASH_SIDE] float): the share of the view's detail, weighted by its strength,
    whose sign the hash contradicts; `valid` ([HASH_SIDE, HASH_SIDE] bool): where the view shows
    the picture (not a turned view's corners, which a copy fills with any colour). 1.0 for a
    view too flat to say (its detail is noise)."""
    strength = np.abs(view).ravel()
    if strength.mean() < FLAT_DETAIL:
        return 1.0
    if valid is not None:
        strength = strength * valid.ravel()
    total = strength.sum()
    return float(strength[(view.ravel() > DETAIL_MIN) != bits].sum() / total) if total > 0 else 1.0


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


class View(NamedTuple):
    """A transform a copy may have undone: the window of the test image it shows ((left, top,
    right, bottom) shares of the picture turned by `angle` degrees), mirrored or not."""
    box: tuple[float, float, float, float]
    angle: float = 0.0
    mirror: bool = False


def grey_copy(im: Image.Image) -> np.ndarray:
    """[h, w] uint8, at most VERIFY_SIDE a side: the grey picture views are cut from."""
    grey = im.convert("L")
    return np.asarray(grey.resize((min(grey.width, VERIFY_SIDE), min(grey.height, VERIFY_SIDE)),
                                  Image.Resampling.BOX))


def colour_copy(im: Image.Image) -> np.ndarray:
    """[h, w, 3] uint8, at most COLOUR_SIDE a side: the colour picture the colour check cuts views from."""
    rgb = im.convert("RGB")
    return np.asarray(rgb.resize((min(rgb.width, COLOUR_SIDE), min(rgb.height, COLOUR_SIDE)),
                                 Image.Resampling.BOX))


def chroma(thumb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB -> [..., 2]: red-green and blue-yellow, blind to any grey level added to all three."""
    r, g, b = thumb[..., 0], thumb[..., 1], thumb[..., 2]
    return np.stack([r - g, b - (r + g) / 2], axis=-1)


def view_chroma(colour: np.ndarray, view: View) -> np.ndarray:
    """[CHROMA_SIDE, CHROMA_SIDE, 2]: the chroma of one view of a test image's colour copy, scaled
    as the cheap embedding scales its thumbnail (minus its mean, unit norm)."""
    src = Image.fromarray(colour, "RGB")
    if view.angle:
        fill = tuple(int(c) for c in colour.reshape(-1, 3).mean(axis=0))
        src = src.rotate(view.angle, Image.Resampling.BICUBIC, fillcolor=fill)
    w, h = src.size
    x0, y0, x1, y1 = view.box
    thumb = np.asarray(src.crop((x0 * w, y0 * h, x1 * w, y1 * h)).resize(
        (CHROMA_SIDE, CHROMA_SIDE), Image.Resampling.BILINEAR), np.float32)
    thumb = thumb[:, ::-1] if view.mirror else thumb
    thumb = thumb - thumb.mean()
    return chroma(thumb / (float(np.linalg.norm(thumb)) or 1.0))


def _pooled(field: np.ndarray) -> np.ndarray:
    """[h, w, 2] -> [h / CHROMA_POOL, w / CHROMA_POOL, 2] block sums (the edge's remainder dropped)."""
    h, w = (n // CHROMA_POOL * CHROMA_POOL for n in field.shape[:2])
    p = CHROMA_POOL
    return field[:h, :w].reshape(h // p, p, w // p, p, 2).sum(axis=(1, 3))


def colours_agree(vector: np.ndarray, colour: np.ndarray, view: View) -> bool:
    """Whether a crawled image (its cheap embedding [768]) may be `view` of a test image (its
    colour copy) by colour: True where either has too little chroma to tell."""
    crawled = chroma(np.asarray(vector, np.float32).reshape(CHROMA_SIDE, CHROMA_SIDE, 3))
    test = view_chroma(colour, view)
    if view.angle:
        m = TURNED_MARGIN
        crawled, test = crawled[m:-m, m:-m], test[m:-m, m:-m]
    crawled, test = _pooled(crawled), _pooled(test)
    a, b = float(np.linalg.norm(crawled)), float(np.linalg.norm(test))
    if a < GREY_CHROMA or b < GREY_CHROMA:
        return True
    spread = np.linalg.svd(crawled.reshape(-1, 2), compute_uv=False)
    if spread[1] < ONE_HUE * spread[0]:
        return True
    return float((crawled * test).sum()) / (a * b) >= COLOUR_AGREE


def view_detail(grey: np.ndarray, view: View) -> np.ndarray:
    """[HASH_SIDE, HASH_SIDE] float32: the detail of one view of a test image's grey copy."""
    return detail(_cut(_turn(grey, view.angle)[0], view))


def view_valid(grey: np.ndarray, view: View) -> np.ndarray | None:
    """[HASH_SIDE, HASH_SIDE] bool: where a turned view's detail comes from the picture alone (not
    from the corners the turn uncovers, nor their edge); None for a view that is not turned."""
    return _valid(_turn(grey, view.angle)[1], view)


def view_mismatch(grey: np.ndarray, view: View, bits: np.ndarray,
                  turned: tuple[Image.Image, Image.Image | None] | None = None) -> float:
    """`mismatch` of a crawled copy hash (`bits`) and one view of a test image's grey copy, its
    picture turned once for its detail and its mask (`turned`: _turn's, where the caller has it)."""
    src, inside = turned if turned is not None else _turn(grey, view.angle)
    return mismatch(detail(_cut(src, view)), bits, _valid(inside, view))


def _turn(grey: np.ndarray, angle: float) -> tuple[Image.Image, Image.Image | None]:
    """The grey copy turned by `angle` degrees (its uncovered corners filled with its mean), and
    where the turned picture is (255) and is not (0); the copy itself and None for no turn."""
    src = Image.fromarray(grey, "L")
    if not angle:
        return src, None
    inside = Image.new("L", src.size, 255).rotate(angle, Image.Resampling.BICUBIC)
    return src.rotate(angle, Image.Resampling.BICUBIC, fillcolor=int(grey.mean())), inside


def _valid(inside: Image.Image | None, view: View) -> np.ndarray | None:
    """view_valid, from _turn's mask."""
    if inside is None:
        return None
    _, coarse = _detail_matrices()
    return coarse @ _cut(inside, view) @ coarse.T >= 0.97 * 255


def _cut(src: Image.Image, view: View) -> np.ndarray:
    """The WORK_SIDE grey square of `view`'s window of `src` (turned already), mirrored if it is."""
    w, h = src.size
    x0, y0, x1, y1 = view.box
    g = grey_square(src, box=(x0 * w, y0 * h, x1 * w, y1 * h))
    return g[:, ::-1] if view.mirror else g


def target_views(im: Image.Image, grey: np.ndarray | None = None) -> tuple[np.ndarray, list[View]]:
    """The copy hashes [V, HASH_BYTES] uint8 of one test image under the transforms a copy may
    have undone (crop windows, small rotations, its trimmed self, and their mirrors), and the View
    each was made from. `grey`: its grey_copy, where the caller has it."""
    grey = grey_copy(im) if grey is None else grey
    whole = grey_square(im.convert("RGB"))  # (made as copy_hashes makes it: an exact copy hashes the same)
    top, bottom, left, right = border_lines(whole)
    n = WORK_SIDE
    views = [View(box) for box in crop_windows()] + [View((0.0, 0.0, 1.0, 1.0), angle) for angle in ROTATIONS]
    if top or bottom or left or right:
        views.append(View((left / n, top / n, 1 - right / n, 1 - bottom / n)))
    src = _turn(grey, 0.0)[0]
    squares = np.stack([whole if v.box == (0, 0, 1, 1) and not v.angle
                        else _cut(_turn(grey, v.angle)[0] if v.angle else src, v) for v in views])
    fine, coarse = _detail_matrices()
    details = fine @ squares @ fine.T - coarse @ squares @ coarse.T  # [V, HASH_SIDE, HASH_SIDE]
    # (a mirrored square's detail is the mirror of its detail: the blurs are the same both ways)
    hashes = np.concatenate([details, details[:, :, ::-1]]) > DETAIL_MIN
    mirrored = [View(v.box, v.angle, True) for v in views]
    return np.packbits(hashes.reshape(len(hashes), -1), axis=1), views + mirrored


def refine(grey: np.ndarray, view: View, bits: np.ndarray, score: float) -> tuple[float, View]:
    """The least mismatch between `bits` and a view of `grey` found by moving `view`'s window edges
    (and, for a turned view, its angle) a step at a time, coarse steps then finer, starting at
    `score` (its mismatch); and that view."""
    turned: dict[float, tuple[Image.Image, Image.Image | None]] = {}  # (each angle turned once)

    def mismatch_of(v: View) -> float:
        if v.angle not in turned:
            turned[v.angle] = _turn(grey, v.angle)
        return view_mismatch(grey, v, bits, turned[v.angle])

    box, angle, evals = list(view.box), view.angle, 0
    params = 5 if view.angle else 4  # (a crop window is not searched for a turn: few copies are both)
    for step in REFINE_STEPS:
        improved = True
        while improved and evals < REFINE_EVALS:
            improved = False
            for k in range(params):
                for sign in (-1, 1):
                    b, a = list(box), angle
                    if k < 4:
                        b[k] += sign * step
                        if not (0 <= b[k] <= 1) or b[2] - b[0] < MIN_KEEP or b[3] - b[1] < MIN_KEEP:
                            continue
                    else:
                        a += sign * step * 100
                    evals += 1
                    s = mismatch_of(View(tuple(b), a, view.mirror))
                    if s < score:
                        score, box, angle, improved = s, b, a, True
    return score, View(tuple(box), angle, view.mirror)


class LeakIndex:
    """The target's test images, as their cheap embeddings, their views' copy hashes and their grey
    copies; `match` says which crawled images are copies of one. A pure function of the test images."""

    def __init__(self, vectors: np.ndarray, hashes: np.ndarray, owners: np.ndarray,
                 views: Sequence[View] = (), greys: Sequence[np.ndarray] = (),
                 colours: Sequence[np.ndarray] = (), hash_index=None) -> None:
        """vectors: [T, 768] cheap embeddings; hashes: [H, HASH_BYTES] uint8; owners: [H], the test
        image (row of `vectors`) each hash was made from; views: [H], the View each was made from;
        greys, colours: [T], each test image's grey_copy and colour_copy (views, greys and colours:
        empty for the cosine check alone; colours empty: no colour check).
        `hash_index`: the binary_index of `hashes` where it is made already (read back from disk:
        leak_store.py), `hashes` then unused."""
        from cache.index import VectorIndex  # (faiss: not in the fetch workers, which only hash)

        self.embeddings = np.asarray(vectors, np.float32)
        self.vectors = VectorIndex.from_vectors(self.embeddings)
        self.owners = np.asarray(owners, np.int64)
        self.views = list(views)
        self.greys = list(greys)
        self.colours = list(colours)
        self.hashes = hash_index if hash_index is not None else binary_index(
            np.ascontiguousarray(hashes, np.uint8).reshape(-1, HASH_BYTES))

    @classmethod
    def from_images(cls, images: Iterable[Image.Image], embed: Callable[[Image.Image], np.ndarray],
                    hashes: bool = True) -> "LeakIndex":
        """`embed`: the crawl's cheap embedding of an image (explorer.crawl.images.cheap_embedding),
        handed in, as this module is what images.py calls for the copy hashes.
        `hashes=False`: the cheap embeddings only (crawl.leak_hamming=-1, the copy hash off)."""
        vectors, codes, owners, views, greys, colours = [], [], [], [], [], []
        for i, im in enumerate(images):
            vectors.append(embed(im))
            if hashes:
                greys.append(grey_copy(im))
                colours.append(colour_copy(im))
                h, v = target_views(im, greys[-1])
                codes.append(h)
                views += v
                owners.append(np.full(len(h), i))
        if not vectors:
            raise ValueError("a leak index needs at least one test image")
        return cls(np.stack(vectors), np.concatenate(codes) if codes else np.zeros((0, HASH_BYTES), np.uint8),
                   np.concatenate(owners) if owners else np.zeros(0, np.int64), views, greys, colours)

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

    def candidates(self, hashes: np.ndarray, radius: int) -> list[tuple[int, int, int]]:
        """[K, HASH_BYTES] one crawled image's copy hashes -> its candidate views, nearest first:
        (bits, view row, which of its hashes), the VIEWS_EACH nearest of each of the CANDIDATES
        test images with a view within `radius` bits."""
        return self.candidates_of([hashes], radius)[0]

    def candidates_of(self, hashes: Sequence[np.ndarray], radius: int) -> list[list[tuple[int, int, int]]]:
        """`candidates` of several crawled images ([K, HASH_BYTES] each), in one search."""
        counts = [len(h) for h in hashes]
        if self.hashes.ntotal == 0 or not sum(counts):
            return [[] for _ in hashes]
        flat = np.ascontiguousarray(np.concatenate([np.asarray(h, np.uint8).reshape(-1, HASH_BYTES)
                                                    for h in hashes]))
        lims, dist, rows = self.hashes.range_search(flat, radius + 1)
        out, q = [], 0
        for n in counts:
            found = sorted((int(d), int(row), k) for k in range(n)
                           for d, row in zip(dist[lims[q + k]:lims[q + k + 1]], rows[lims[q + k]:lims[q + k + 1]]))
            q += n
            views: dict[int, list[tuple[int, int, int]]] = {}
            for d, row, k in found:
                owner = int(self.owners[row])
                if owner in views or len(views) < CANDIDATES:
                    mine = views.setdefault(owner, [])
                    if len(mine) < VIEWS_EACH and all(r != row for _, r, _ in mine):
                        mine.append((d, row, k))
            out.append(sorted(v for mine in views.values() for v in mine))
        return out

    def judge(self, hashes: np.ndarray, candidates: list[tuple[int, int, int]], accept: float) -> tuple[float, int]:
        """The mismatch of a crawled image's best candidate view (its copy hashes [K, HASH_BYTES]),
        and that view's distance in bits: (2.0, -1) without candidates. Where the best is above
        `accept` but near, it is refined, and the refined view's mismatch counts 1 / REFINED_SHARE
        times (`accept` 0: always, where near)."""
        return self.judged(hashes, candidates, accept)[:2]

    def judged(self, hashes: np.ndarray, candidates: list[tuple[int, int, int]], accept: float,
               agree: Callable[[int, int, View], bool] | None = None) -> tuple[float, int, int, int, View | None]:
        """`judge`, with the verdict's view row, which of the crawled hashes it was judged on
        (-1, -1 without candidates) and its view (refined where it was). `agree(row, hash, view)`:
        whether a view the hash accepts may be the picture by what the hash does not see (the
        colour check); one that may not is passed over for the next best (another test image
        drawn alike may be the one copied)."""
        bits = np.unpackbits(np.asarray(hashes, np.uint8), axis=1).astype(bool)  # [K, HASH_BITS]
        scored = sorted((view_mismatch(self.greys[self.owners[row]], self.views[row], bits[k]), d, row, k)
                        for d, row, k in candidates)
        best, refined_one = (2.0, -1, -1, -1, None), False  # (mismatch, bits apart, row, hash, view)
        for score, d, row, k in scored:
            if score > REFINE_BELOW:
                break
            view = self.views[row]
            if score > accept and not refined_one:   # (one refinement a crawled image at most)
                refined_one = True
                refined, moved = refine(self.greys[self.owners[row]], view, bits[k], score)
                if refined / REFINED_SHARE < score:
                    score, view = refined / REFINED_SHARE, moved
            if score <= accept and agree is not None and not agree(row, k, view):
                continue
            best = min(best, (score, d, row, k, view), key=lambda b: b[:4])
            if score <= accept:
                break
        if best[2] < 0 and scored and scored[0][0] > REFINE_BELOW:   # (nothing near: the best as it is)
            score, d, row, k = scored[0]
            best = (score, d, row, k, self.views[row])
        return best

    def match(self, vectors: np.ndarray, hashes: Sequence[np.ndarray | None], cosine: float,
              hamming: int, accept: float) -> list[str | None]:
        """Per crawled image (its cheap vector [768] and copy hashes [K, HASH_BYTES], or None where it
        has none): why it is a copy of a test image, or None. `hamming`: the candidates' radius in
        bits; `accept`: the greatest mismatch of a copy."""
        n = len(vectors)
        sims = self.vectors.max_similarity(np.asarray(vectors, np.float32)) if n else np.zeros(0)
        hashes = [np.zeros((0, HASH_BYTES), np.uint8) if h is None or hamming < 0
                  else np.asarray(h, np.uint8).reshape(-1, HASH_BYTES) for h in hashes]
        out: list[str | None] = []
        for vector, sim, h, cands in zip(vectors, sims, hashes, self.candidates_of(hashes, hamming)):
            verdict = None
            def agree(row: int, k: int, view: View) -> bool:
                return k != 0 or not self.colours or colours_agree(vector, self.colours[self.owners[row]], view)
            score, d, _, _, _ = self.judged(h, cands, accept, agree)
            if score <= accept:
                verdict = (f"copy of a target test image: {score:.0%} of its detail disagrees "
                           f"(copy hash {d}/{HASH_BITS} bits from that view)")
            if verdict is None and sim >= cosine:
                verdict = f"cosine {sim:.3f} to a target test image"
            out.append(verdict)
        return out


def binary_index(codes: np.ndarray, lists: int | None = None):
    """A FAISS binary index of `codes` [H, HASH_BYTES]: flat (every code compared) up to
    FLAT_INDEX_MAX codes; past it, inverted lists (every crawled image is searched, and a flat
    search costs in proportion to the test set's views), trained on a sample of the codes
    (seeded: the same codes give the same index). `lists`: that many lists whatever the size,
    0 a flat index (bench/decontam.py)."""
    import faiss

    if lists == 0 or (lists is None and len(codes) <= FLAT_INDEX_MAX):
        index = faiss.IndexBinaryFlat(HASH_BITS)
    else:
        lists = lists or min(IVF_LISTS, len(codes) // CODES_PER_LIST)
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(HASH_BITS), HASH_BITS, lists)
        sample = np.random.default_rng(0).choice(len(codes), min(len(codes), 40 * lists), replace=False)
        index.train(codes[np.sort(sample)])
        index.nprobe = IVF_PROBE
    if len(codes):
        index.add(codes)
    return index


def index_codes(index) -> np.ndarray:
    """[H, HASH_BYTES]: the codes a `binary_index` holds, in the order they were added."""
    import faiss

    if isinstance(index, faiss.IndexBinaryIVF):
        index.make_direct_map()
        return index.reconstruct_n(0, index.ntotal)
    return faiss.vector_to_array(index.xb).reshape(-1, HASH_BYTES)
