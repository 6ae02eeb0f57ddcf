"""`explore cache verify`: do the image files, the database rows and the FAISS index agree?

Each check returns problem strings ("" means nothing wrong); `verify` runs them all. A clean
cache after any crash and resume is what a resumed run relies on (ARCHITECTURE.md, "Crash
safety"), so every check here is a promise of the crawl pipeline or the loop, not a style
preference:

- files: every stored file is named by the sha256 of its bytes and has an `images` row; every
  row's file exists with the recorded size;
- index: the FAISS index holds exactly one vector per image row with a `vec_id`, and (when
  `deep`) each vector is the embedding of that image's file (the caller says which embedding:
  `Embedding`, the crawl's cheap one);
- attempts: outcomes are known values; each `ok` attempt has its image row and each image row
  its one `ok` attempt; a `duplicate` points at a cached image;
- queries and rounds: every query's round has a row, images carry their query's round, a round
  marked done has no query left pending.

`repair` (`explore cache verify --repair`) mends what two writers on one database left before
they were refused (`cache.db.WriterLock`): `ok` attempts whose image row was dropped get it back
from the stored file, or, with no file to restore it from, are deleted so that the next fetch
gets their URL again; one image kept by both writers keeps one `ok` attempt; the index is made
to hold exactly each row's embedding.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cache.db import AttemptRef, MetaDB, StoredImage, WriterLock
from cache.errors import UserError
from cache.index import VectorIndex
from cache.outcomes import UrlOutcome
from cache.paths import IMAGES_DIR, db_path_for, image_relpath, index_path_for

SHA_NAME = re.compile(r"^[0-9a-f]{64}\.jpg$")
TEMP_NAME = re.compile(r"^[0-9a-f]{64}\.tmp\d+$")  # ImageStore.put's temp file, left by a kill
# The index holds the embedding of the image before its JPEG re-encoding, verify re-embeds the
# stored JPEG: re-encoding moves the cheap embedding a little, never below this; any other
# cached image scores under the near-dup threshold (0.95), or it would not have been kept.
SAME_IMAGE_COSINE = 0.95
MAX_LISTED = 20  # problems of one kind listed one by one; the rest are counted


@dataclass(frozen=True)
class Embedding:
    """How the index's vectors are made from an image file: `fn(bytes) -> [dim]` unit-norm
    float32. The cache does not make them; its writer says how (explorer.crawl.crawler.CHEAP_EMBEDDING)."""

    fn: Callable[[bytes], np.ndarray]
    dim: int


def verify(cache_dir: str | Path, db_path: str | Path | None = None, index_name: str = "cheap",
           deep: bool = True, *, embedding: Embedding) -> list[str]:
    """Every problem found in CACHE_DIR (with its DB at `db_path`, default CACHE_DIR/explore.db).
    A run's DB (elsewhere) lists that run's images only: files that other runs sharing the
    cache keep are not reported as strays then."""
    cache_dir = Path(cache_dir)
    own_db = db_path is None or Path(db_path).resolve() == db_path_for(cache_dir).resolve()
    index_path = index_path_for(cache_dir, db_path, index_name)
    db_path = db_path_for(cache_dir, db_path)
    if not db_path.exists():
        return [f"no database at {db_path}"]
    with MetaDB(db_path, readonly=True) as db:
        problems = check_sqlite(db)
        if problems:
            return problems
        images = db.stored_images()
        problems += check_files(cache_dir, images, orphans=own_db)
        problems += check_index(index_path, cache_dir, images, deep, embedding)
        problems += check_attempts(db, images)
        problems += check_rounds(db)
    return problems


def check_sqlite(db: MetaDB) -> list[str]:
    return [f"database: {r}" for r in db.integrity_problems()]


def check_files(cache_dir: Path, images: list[StoredImage], orphans: bool = True) -> list[str]:
    """Files on disk against `images` rows, with hashes and sizes: both ways, or (orphans=False,
    a store shared with other runs) the rows' files only."""
    out = Listing()
    by_path = {r.path: r for r in images}
    root = cache_dir / IMAGES_DIR
    seen: set[str] = set()
    if orphans:
        paths = sorted(root.rglob("*")) if root.exists() else []
    else:
        paths = sorted(p for p in (cache_dir / rel for rel in by_path) if p.is_file())
    for path in paths:
        if path.is_dir():
            continue
        rel = str(path.relative_to(cache_dir))
        if TEMP_NAME.match(path.name):
            continue  # a write cut short: never renamed into place, so never a stored file
        if not SHA_NAME.match(path.name) or path.parent.name != path.name[:2]:
            out.add("stray file", rel)
            continue
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha != path.stem:
            out.add("file whose bytes do not match its name", rel)
        row = by_path.get(rel)
        if row is None:
            out.add("file without an images row", rel)
            continue
        seen.add(rel)
        if row.sha256 != path.stem:
            out.add("images row whose sha256 is not its file's name", rel)
        if row.bytes is not None and row.bytes != len(data):
            out.add("file size differs from its row", f"{rel} ({len(data)} != {row.bytes})")
    for rel in sorted(set(by_path) - seen):
        if not (cache_dir / rel).is_file():
            out.add("images row without its file", rel)
    return out.problems()


def check_index(index_path: Path, cache_dir: Path, images: list[StoredImage], deep: bool,
                embedding: Embedding) -> list[str]:
    """The index holds one vector per image row with a vec_id, and nothing else."""
    import faiss

    out = Listing()
    want = Counter(r.vec_id for r in images if r.vec_id is not None)
    if not index_path.exists():
        if want:
            out.add("no index file, but images have vec_ids", f"{index_path} ({len(want)} vectors expected)")
        return out.problems()
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as e:
        return [f"index unreadable: {index_path}: {str(e).splitlines()[0]}"]
    try:
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    except AttributeError:
        return [f"index {index_path} has no id map (not written by explore)"]
    have = Counter(ids.tolist())
    for vid, n in sorted(have.items()):
        if n > 1:
            out.add("vec_id held more than once in the index", f"{vid} x{n}")
    for vid in sorted(set(have) - set(want)):
        out.add("index vector without an images row", str(vid))
    for vid in sorted(set(want) - set(have)):
        out.add("image missing from the index", str(vid))
    if not deep or index.d != embedding.dim:
        return out.problems()
    rows = {r.vec_id: r for r in images if r.vec_id is not None}
    position = {vid: i for i, vid in enumerate(ids.tolist())}
    for vid in sorted(set(want) & set(have)):
        path = cache_dir / rows[vid].path
        if not path.is_file():
            continue  # reported by check_files
        try:
            expected = embedding.fn(path.read_bytes())
        except OSError as e:
            out.add("stored file is not a readable image", f"{rows[vid].path}: {e}")
            continue
        got = index.index.reconstruct(position[vid])  # the flat index under the id map: by position
        if float(np.dot(expected, got)) < SAME_IMAGE_COSINE:
            out.add("index vector is not its image's embedding", f"vec_id {vid} ({rows[vid].path})")
    return out.problems()


def check_attempts(db: MetaDB, images: list[StoredImage]) -> list[str]:
    out = Listing()
    known = {o.value for o in UrlOutcome}
    for outcome, n in db.outcome_counts().items():
        if outcome not in known:
            out.add("attempts with an unknown outcome", f"{outcome!r} x{n}")
    shas = {r.sha256 for r in images}
    ok = Counter()
    for a in db.attempt_refs("ok"):
        if a.sha256 not in shas:
            out.add("ok attempt without an images row", a.url)
        ok[a.sha256] += 1
    for r in images:
        if ok[r.sha256] != 1:
            out.add("image without exactly one ok attempt", f"{r.sha256[:16]} ({ok[r.sha256]} ok attempts)")
    for a in db.attempt_refs("duplicate", with_sha256=True):
        if a.sha256 not in shas:
            out.add("duplicate attempt of an image not in the cache", a.url)
    queries = set(db.query_rounds())
    if queries:  # a run's database (a plain `explore fetch` cache has no queries)
        for a in db.attempt_refs():
            if a.query_id is not None and a.query_id not in queries:
                out.add("attempt of an unknown query", f"{a.url} (query {a.query_id})")
    return out.problems()


def check_rounds(db: MetaDB) -> list[str]:
    """Queries and images against their rounds."""
    out = Listing()
    rounds = db.round_statuses()
    queries = {q.id: q for q in db.query_states()}
    for q in queries.values():
        if q.round not in rounds:
            out.add("query of a round that has no row", f"query {q.id} (round {q.round})")
        elif rounds[q.round] == "done" and q.status not in ("done", "failed", "retry"):
            out.add("round done with a query unfinished", f"query {q.id} {q.status} (round {q.round})")
        if q.status in ("searched", "done") and q.n_results is None:
            out.add("query searched without a result count", f"query {q.id}")
    for r in db.stored_images():
        if r.query_id is None:
            continue
        q = queries.get(r.query_id)
        if q is None:
            out.add("image of an unknown query", f"{r.sha256[:16]} (query {r.query_id})")
        elif q.round != r.round:
            out.add("image round differs from its query's", f"{r.sha256[:16]} ({r.round} != {q.round})")
    for q in queries.values():
        if q.status == "pending":
            n = db.attempt_count(q.id)
            if n:
                out.add("pending query with attempts", f"query {q.id} ({n} attempts)")
    return out.problems()


class Listing:
    """Problems grouped by kind: the first MAX_LISTED of each kind named, the rest counted."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = {}

    def add(self, kind: str, what: str) -> None:
        self.kinds.setdefault(kind, []).append(what)

    def problems(self) -> list[str]:
        out = []
        for kind, items in self.kinds.items():
            out += [f"{kind}: {w}" for w in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                out.append(f"{kind}: ... and {len(items) - MAX_LISTED} more")
        return out


def repair(cache_dir: str | Path, db_path: str | Path | None = None, index_name: str = "cheap", *,
           embedding: Embedding) -> list[str]:
    """Mend the database at `db_path` (default CACHE_DIR/explore.db) and its index as their one
    writer (WriterBusy while another process writes them); returns one line per thing done."""
    cache_dir = Path(cache_dir)
    index_path = index_path_for(cache_dir, db_path, index_name)
    db_path = db_path_for(cache_dir, db_path)
    if not db_path.exists():
        return []
    with WriterLock(db_path), MetaDB(db_path) as db:
        with db.transaction():
            done = [restore_image_rows(db, cache_dir), restore_ok_attempts(db), settle_extra_ok_attempts(db),
                    retry_attempts_without_image(db)]
        done.append(mend_index(db, cache_dir, index_path, embedding))
    return [line for line in done if line]


def restore_image_rows(db, cache_dir: Path) -> str:
    """An image row for each sha256 of an `ok` attempt that has none, from its stored file
    (checked against its name); the first such attempt of a sha256 becomes its `first_url`."""
    from PIL import Image

    lost = db.ok_attempts_without_image()
    rounds = db.query_rounds()
    restored = 0
    for a in {r.sha256: r for r in reversed(lost)}.values():   # the first attempt of each sha256
        rel = image_relpath(a.sha256)
        try:
            data = (cache_dir / rel).read_bytes()
            if hashlib.sha256(data).hexdigest() != a.sha256:
                continue
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
        except OSError:  # no file, or not a readable image: left to retry_attempts_without_image
            continue
        # the size before resizing is not kept anywhere but in the lost row: unknown (NULL)
        db.add_image(a.sha256, rel, width, height, None, None, bytes=len(data), first_url=a.url,
                     caption=a.caption or "", query_id=a.query_id, round=rounds.get(a.query_id),
                     vec_id=db.next_vec_id())
        restored += 1
    return f"restored {restored} image rows from their files" if restored else ""


def restore_ok_attempts(db) -> str:
    """A URL both writers fetched: the second found the first's image row and recorded
    `duplicate` over the first's `ok` (one row per URL and query). The attempt of the URL the
    row names is its `ok` again."""
    n = db.restore_ok_attempts()
    return f"restored {n} ok attempts that a second writer had recorded as duplicate" if n else ""


def settle_extra_ok_attempts(db) -> str:
    """An image two writers both kept: the attempt its row names stays `ok`, the others become
    `duplicate` (what the second would have recorded alone)."""
    by_sha: dict[str, list[tuple[AttemptRef, str]]] = {}
    for a, first_url in db.ok_attempts_of_images():
        by_sha.setdefault(a.sha256, []).append((a, first_url))
    extra = []
    for attempts in by_sha.values():
        keep = next((a for a, first_url in attempts if a.url == first_url), attempts[0][0])
        extra += [a.id for a, _ in attempts if a is not keep]
    db.mark_duplicate(extra, "same sha256 already cached (settled by cache verify --repair)")
    return f"marked {len(extra)} further ok attempts of one image as duplicate" if extra else ""


def retry_attempts_without_image(db) -> str:
    """`ok` and `duplicate` attempts of an image that is not cached (and cannot be restored):
    deleted, so that the next fetch (or a resumed run) fetches their URL again."""
    urls = db.uncached_attempt_urls()
    if not urls:
        return ""
    db.delete_uncached_attempts()
    db.log_event("repair_retry", urls=urls[:MAX_LISTED], n=len(urls))
    return f"made {len(urls)} attempts of uncached images retryable: the next fetch gets them again"


def mend_index(db, cache_dir: Path, index_path: Path, embedding: Embedding) -> str:
    """The index made to hold exactly one vector per image row, that row's file's embedding:
    strays and repeats removed, missing and wrong vectors (re)computed from the files."""
    dim = embedding.dim
    try:
        index, unreadable = VectorIndex.load(index_path, dim), False
    except (RuntimeError, UserError):  # faiss cannot parse it: every vector is computed afresh
        index, unreadable = VectorIndex(dim), True
    held = Counter(index.ids().tolist())
    unwanted, fresh = [], {}     # ids to remove; id -> vector to add
    for row in db.iter_images():
        vid = row.vec_id
        try:
            vec = embedding.fn((cache_dir / row.path).read_bytes())
        except OSError:  # gone, or not a readable image: verify names it, nothing to index
            continue
        if held.get(vid) == 1 and float(np.dot(vec, index.index.reconstruct(vid))) >= SAME_IMAGE_COSINE:
            continue
        fresh[vid] = vec
        if vid in held:  # the other writer's image under this id, or held twice
            unwanted.append(vid)
    rows = db.vec_ids()
    strays = [vid for vid in held if vid not in rows]
    if not (fresh or strays or unreadable):
        return ""
    # one pass each: removing from a flat index rewrites it
    index.index.remove_ids(np.asarray(unwanted + strays, dtype=np.int64))
    index.add(np.stack(list(fresh.values())) if fresh else np.empty((0, index.dim), np.float32),
              np.asarray(list(fresh), dtype=np.int64))
    index.save(index_path)
    return (f"index{' (unreadable, rebuilt)' if unreadable else ''}: {len(fresh) - len(unwanted)} vectors "
            f"added, {len(unwanted)} replaced, {len(strays)} without a row removed")
