"""`explore cache verify`: do the image files, the database rows and the FAISS index agree?

Each check returns problem strings ("" means nothing wrong); `verify` runs them all. A clean
cache after any crash and resume is what DESIGN.md §4 promises, so every check here is a
promise of the crawl pipeline or the loop, not a style preference:

- files: every stored file is named by the sha256 of its bytes and has an `images` row; every
  row's file exists with the recorded size;
- index: the FAISS index holds exactly one vector per image row with a `vec_id`, and (when
  `deep`) each vector is the cheap embedding of that image's file;
- attempts: outcomes are known values; each `ok` attempt has its image row and each image row
  its one `ok` attempt; a `duplicate` points at a cached image;
- queries and rounds: every query's round has a row, images carry their query's round, a round
  marked done has no query left pending.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np

from explorer.records import Outcome

SHA_NAME = re.compile(r"^[0-9a-f]{64}\.jpg$")
TEMP_NAME = re.compile(r"^[0-9a-f]{64}\.tmp\d+$")  # ImageStore.put's temp file, left by a kill
# The index holds the embedding of the image before its JPEG re-encoding, verify re-embeds the
# stored JPEG: the two agree to 0.98-1.0 (0.9876 the lowest seen in 1,400 images); any other
# cached image scores under the near-dup threshold (0.95), or it would not have been kept.
SAME_IMAGE_COSINE = 0.95
MAX_LISTED = 20  # problems of one kind listed one by one; the rest are counted


def verify(cache_dir: str | Path, db_path: str | Path | None = None, index_name: str = "cheap",
           deep: bool = True) -> list[str]:
    """Every problem found in CACHE_DIR (with its DB at `db_path`, default CACHE_DIR/explore.db).
    A run's DB (elsewhere) lists that run's images only: files that other runs sharing the
    cache keep are not reported as strays then."""
    from explorer.crawl import index_path_for

    cache_dir = Path(cache_dir)
    own_db = db_path is None or Path(db_path).resolve() == (cache_dir / "explore.db").resolve()
    index_path = index_path_for(cache_dir, db_path, index_name)
    db_path = Path(db_path) if db_path else cache_dir / "explore.db"
    if not db_path.exists():
        return [f"no database at {db_path}"]
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        problems = check_sqlite(con)
        if problems:
            return problems
        images = [dict(r) for r in con.execute("SELECT * FROM images")]
        problems += check_files(cache_dir, images, orphans=own_db)
        problems += check_index(index_path, cache_dir, images, deep)
        problems += check_attempts(con, images)
        problems += check_rounds(con)
    finally:
        con.close()
    return problems


def check_sqlite(con: sqlite3.Connection) -> list[str]:
    rows = [r[0] for r in con.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else [f"database: {r}" for r in rows]


def check_files(cache_dir: Path, images: list[dict], orphans: bool = True) -> list[str]:
    """Files on disk against `images` rows, with hashes and sizes: both ways, or (orphans=False,
    a store shared with other runs) the rows' files only."""
    out = Listing()
    by_path = {r["path"]: r for r in images}
    root = cache_dir / "images"
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
        if row["sha256"] != path.stem:
            out.add("images row whose sha256 is not its file's name", rel)
        if row["bytes"] is not None and row["bytes"] != len(data):
            out.add("file size differs from its row", f"{rel} ({len(data)} != {row['bytes']})")
    for rel in sorted(set(by_path) - seen):
        if not (cache_dir / rel).is_file():
            out.add("images row without its file", rel)
    return out.problems()


def check_index(index_path: Path, cache_dir: Path, images: list[dict], deep: bool) -> list[str]:
    """The index holds one vector per image row with a vec_id, and nothing else."""
    import faiss

    from explorer.images import embed_bytes

    out = Listing()
    want = Counter(r["vec_id"] for r in images if r["vec_id"] is not None)
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
    if not deep or index.d != 768:
        return out.problems()
    rows = {r["vec_id"]: r for r in images if r["vec_id"] is not None}
    position = {vid: i for i, vid in enumerate(ids.tolist())}
    for vid in sorted(set(want) & set(have)):
        path = cache_dir / rows[vid]["path"]
        if not path.is_file():
            continue  # reported by check_files
        try:
            expected = embed_bytes(path.read_bytes())
        except OSError as e:
            out.add("stored file is not a readable image", f"{rows[vid]['path']}: {e}")
            continue
        got = index.index.reconstruct(position[vid])  # the flat index under the id map: by position
        if float(np.dot(expected, got)) < SAME_IMAGE_COSINE:
            out.add("index vector is not its image's embedding", f"vec_id {vid} ({rows[vid]['path']})")
    return out.problems()


def check_attempts(con: sqlite3.Connection, images: list[dict]) -> list[str]:
    out = Listing()
    known = {o.value for o in Outcome}
    for outcome, n in con.execute("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome"):
        if outcome not in known:
            out.add("attempts with an unknown outcome", f"{outcome!r} x{n}")
    shas = {r["sha256"] for r in images}
    ok = Counter()
    for r in con.execute("SELECT url, sha256 FROM attempts WHERE outcome='ok'"):
        if r["sha256"] not in shas:
            out.add("ok attempt without an images row", r["url"])
        ok[r["sha256"]] += 1
    for r in images:
        if ok[r["sha256"]] != 1:
            out.add("image without exactly one ok attempt", f"{r['sha256'][:16]} ({ok[r['sha256']]} ok attempts)")
    for r in con.execute("SELECT url, sha256 FROM attempts WHERE outcome='duplicate' AND sha256 IS NOT NULL"):
        if r["sha256"] not in shas:
            out.add("duplicate attempt of an image not in the cache", r["url"])
    queries = {r[0] for r in con.execute("SELECT id FROM queries")}
    if queries:  # a run's database (a plain `explore fetch` cache has no queries)
        for r in con.execute("SELECT url, query_id FROM attempts"):
            if r["query_id"] is not None and r["query_id"] not in queries:
                out.add("attempt of an unknown query", f"{r['url']} (query {r['query_id']})")
    return out.problems()


def check_rounds(con: sqlite3.Connection) -> list[str]:
    """Queries and images against their rounds."""
    out = Listing()
    rounds = {r["round"]: dict(r) for r in con.execute("SELECT * FROM rounds")}
    queries = {r["id"]: dict(r) for r in con.execute("SELECT * FROM queries")}
    for q in queries.values():
        if q["round"] not in rounds:
            out.add("query of a round that has no row", f"query {q['id']} (round {q['round']})")
        elif rounds[q["round"]]["status"] == "done" and q["status"] not in ("done", "failed"):
            out.add("round done with a query unfinished", f"query {q['id']} {q['status']} (round {q['round']})")
        if q["status"] in ("searched", "done") and q["n_results"] is None:
            out.add("query searched without a result count", f"query {q['id']}")
    for r in con.execute("SELECT sha256, query_id, round FROM images WHERE query_id IS NOT NULL"):
        q = queries.get(r["query_id"])
        if q is None:
            out.add("image of an unknown query", f"{r['sha256'][:16]} (query {r['query_id']})")
        elif q["round"] != r["round"]:
            out.add("image round differs from its query's", f"{r['sha256'][:16]} ({r['round']} != {q['round']})")
    for q in queries.values():
        if q["status"] == "pending":
            n = con.execute("SELECT COUNT(*) FROM attempts WHERE query_id=?", (q["id"],)).fetchone()[0]
            if n:
                out.add("pending query with attempts", f"query {q['id']} ({n} attempts)")
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
