"""SQLite metadata (WAL): rounds, queries, URL attempts, images, cached search results, events.

One schema serves `explore fetch` (CACHE_DIR/explore.db) and a run (RUN_DIR/explore.db).
One connection, used from one thread (the event loop's). Writes go through
`with db.transaction():`, which nests (inner blocks join the outer one), so the loop can
commit a query's attempts and its status together. One process writes a database at a time
(`WriterLock`); readers (stats, verify, status) need no lock and open it read-only
(`MetaDB(path, readonly=True)`, or `MetaDB.reading`, which also closes it).

Every SQL statement of the project is here. Rows come back as small typed records (the
NamedTuples below: `QueryRow`, `AttemptRow`, `ImageRow` hold every column of their table);
only `query_table` (an export, its columns as the database has them), `events` and the cached
search results (decoded JSON) are dicts.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from cache.errors import CorruptRunState
from cache.paths import lock_path_for

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, started_at REAL, finished_at REAL, status TEXT, info TEXT);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY, round INTEGER, concept TEXT, text TEXT, engine TEXT,
    status TEXT NOT NULL DEFAULT 'pending', n_results INTEGER, n_kept INTEGER, reward REAL,
    error TEXT, created_at REAL);
CREATE INDEX IF NOT EXISTS queries_round ON queries(round);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, url TEXT NOT NULL, query_id INTEGER, caption TEXT, outcome TEXT NOT NULL,
    reason TEXT, sha256 TEXT, status_code INTEGER, bytes INTEGER, elapsed_s REAL, created_at REAL);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_url_query ON attempts(url, IFNULL(query_id, -1));
CREATE INDEX IF NOT EXISTS attempts_query ON attempts(query_id);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY, path TEXT, width INTEGER, height INTEGER, orig_width INTEGER,
    orig_height INTEGER, bytes INTEGER, first_url TEXT, caption TEXT, query_id INTEGER,
    round INTEGER, reward REAL, vec_id INTEGER UNIQUE, added_at REAL);
CREATE INDEX IF NOT EXISTS images_query ON images(query_id);
CREATE TABLE IF NOT EXISTS search_cache (
    engine TEXT, query TEXT, results TEXT, created_at REAL, PRIMARY KEY (engine, query));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time REAL, kind TEXT, message TEXT);
"""
# Rewards recomputed with a later encoder (explorer.run.loop's refresh), kept beside the reward the
# row got when its round scored it: (table, column, type). Added to databases made before them.
FRESH_COLUMNS = (("images", "fresh_reward", "REAL"), ("images", "fresh_round", "INTEGER"),
                 ("queries", "fresh_reward", "REAL"), ("queries", "fresh_round", "INTEGER"))
# How a query re-asks its concept (policies/refine.py): "" = its first ask, "page:P",
# "backend:NAME", "desc:TEXT"; the results page and engine backend it was sent with.
REFINEMENT_COLUMNS = (("queries", "refinement", "TEXT NOT NULL DEFAULT ''"),
                      ("queries", "page", "INTEGER NOT NULL DEFAULT 1"),
                      ("queries", "backend", "TEXT NOT NULL DEFAULT ''"))

# "retry": the search failed (the engine was unavailable) and is asked again in a later round
QUERY_STATUSES = ("pending", "searched", "done", "failed", "retry")
QUERY_FIELDS = {"status", "n_results", "n_kept", "reward", "error", "text", "engine"}
# Outcomes after which a URL is never fetched again; the rest (timeouts, 5xx, refused, a full
# disk) may succeed on a later try.
RETRYABLE_OUTCOMES = ("timeout", "connection_error", "disk_full", "worker_lost")


def is_final(row: AttemptRow) -> bool:
    """Whether an attempt row settles its URL for good (no point fetching it again)."""
    if row.outcome in RETRYABLE_OUTCOMES:
        return False
    status = row.status_code or 0
    return not (row.outcome == "http_error" and (status in (0, 429) or status >= 500))


class QueryRow(NamedTuple):
    """A queries row, every column (those added by migrations last, as the table has them)."""

    id: int
    round: int
    concept: str
    text: str
    engine: str
    status: str
    n_results: int | None
    n_kept: int | None
    reward: float | None
    error: str | None
    created_at: float | None
    fresh_reward: float | None
    fresh_round: int | None
    refinement: str
    page: int
    backend: str


class AttemptRow(NamedTuple):
    """An attempts row, every column."""

    id: int
    url: str
    query_id: int | None
    caption: str | None
    outcome: str
    reason: str | None
    sha256: str | None
    status_code: int | None
    bytes: int | None
    elapsed_s: float | None
    created_at: float | None


class ImageRow(NamedTuple):
    """An images row, every column (the refreshed reward and its round last)."""

    sha256: str
    path: str
    width: int | None
    height: int | None
    orig_width: int | None
    orig_height: int | None
    bytes: int | None
    first_url: str | None
    caption: str | None
    query_id: int | None
    round: int | None
    reward: float | None
    vec_id: int | None
    added_at: float | None
    fresh_reward: float | None
    fresh_round: int | None


class ScoredImage(NamedTuple):
    """An image of earlier rounds with its freshest reward (the replay pool's stream)."""

    sha256: str
    path: str
    caption: str | None
    reward: float


class RefreshItem(NamedTuple):
    """A scored query's kept image, to be re-scored by a later encoder."""

    query_id: int
    round: int
    concept: str
    sha256: str
    path: str
    caption: str | None


def _row(cls, r: sqlite3.Row):
    """`cls` (a NamedTuple above) from a row, by column name: None for a column the row lacks
    (a database written before a migration added it, opened read-only, is not migrated)."""
    have = r.keys()
    return cls(*(r[f] if f in have else None for f in cls._fields))


def _lenient_text(value: bytes | None) -> str | None:
    """A text column read as bytes (CAST AS BLOB), decoded; what is not UTF-8 becomes U+FFFD."""
    return None if value is None else bytes(value).decode("utf-8", "replace")


class QueryCounts(NamedTuple):
    """How a run's queries stand (`explore status`)."""

    total: int
    failed: int          # failed searches, "retry" ones included (a row each time)
    retry: int           # asked again in a later round
    reasks: int          # refinements: another page, backend or descriptor of a concept
    awaiting: int        # crawled, not scored yet (crawled ahead while the last round trained)


class ConceptReward(NamedTuple):
    """One concept's queries: `reward` the mean over its first asks, `reask_reward` over its
    re-asks; `kept` images in all; `scored_round` the latest round whose encoder scored one."""

    concept: str
    n: int
    reward: float
    reasks: int
    reask_reward: float | None
    kept: int | None
    scored_round: int | None


class StoredImage(NamedTuple):
    """What `cache verify` checks of an images row."""

    sha256: str
    path: str
    bytes: int | None
    vec_id: int | None
    query_id: int | None
    round: int | None


class KeptImage(NamedTuple):
    """An image a concept's query kept, as the HTML report shows it, with the request that found
    it (engine, text, page, backend: the key of its search results, which name its source page)."""

    sha256: str
    path: str
    url: str | None
    caption: str | None
    reward: float | None
    engine: str
    text: str
    page: int
    backend: str


class ExportedImage(NamedTuple):
    """A kept image as `explore export` writes it: its row, the query that found it (None for an
    image no query found, as in a cache of `explore fetch`) and its freshest reward (None until
    a round scores it)."""

    sha256: str
    path: str
    caption: str | None
    url: str | None
    concept: str | None
    text: str | None
    refinement: str | None
    reward: float | None
    round: int | None
    width: int | None
    height: int | None


class AttemptRef(NamedTuple):
    """An attempts row by its URL and what it names."""

    id: int
    url: str
    sha256: str | None
    query_id: int | None
    caption: str | None


class QueryState(NamedTuple):
    """Where a query stands, for `cache verify`."""

    id: int
    round: int
    status: str
    n_results: int | None


def first_per_url(rows: Iterable[AttemptRow]) -> dict[str, AttemptRow]:
    """The first of `rows` (attempt rows, oldest first) for each URL."""
    out: dict[str, AttemptRow] = {}
    for r in rows:
        out.setdefault(r.url, r)
    return out


class WriterBusy(Exception):
    """Another process holds the writer lock of this database."""


class WriterLock:
    """One writer per database and the near-duplicate index beside it.

    A writer numbers its new images (`vec_id`) from the database's highest at open and saves
    its whole in-memory index when done, so a second writer would reuse the first one's ids
    and overwrite its index. An exclusive `flock` on `explore.db.lock`, held for the writer's
    life, refuses the second one; the kernel drops it when the holder exits, kill -9 included.
    The file holds the holder's pid, for the refusal to name it.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.path = lock_path_for(self.db_path)
        self.fd: int | None = None

    def acquire(self) -> "WriterLock":
        """Take the lock, or raise WriterBusy at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WriterBusy(f"{self.db_path} is being written by another explore process "
                             f"(pid {holder}); wait for it to end, or give this one its own cache directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        # a writer dropped unclosed (an error while a run is being built) must not keep the
        # database locked for the rest of the process, as its SQLite connection would not
        self.release()


DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # a file to restore, unlike a busy or read-only one


class MetaDB:
    """The metadata database. Every method runs on the caller's thread; share nothing across threads."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._depth = 0
        if readonly:  # a reader: never creates, migrates or writes the file
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self.conn.row_factory = sqlite3.Row
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.executescript(SCHEMA)
            self._add_fresh_columns()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            if e.sqlite_errorname not in DAMAGED:
                raise
            raise CorruptRunState(f"cannot read the database {self.path} ({e}): restore it from a copy, "
                                  f"or salvage it with `sqlite3 {self.path} .recover`") from e

    @classmethod
    @contextmanager
    def reading(cls, path: str | Path, what: str = "database") -> Iterator["MetaDB"]:
        """The database at `path`, read-only, closed after. One that cannot be read (truncated,
        overwritten, not a database) is the user's to restore: CorruptRunState, one line."""
        db = cls(path, readonly=True)
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise CorruptRunState(f"cannot read the {what} {path} ({e}): restore it from a copy, or "
                                  f"salvage it with `sqlite3 {path} .recover`") from e
        finally:
            db.close()

    def has_column(self, table: str, column: str) -> bool:
        """Whether `table` has `column` (a database written before it was added has not)."""
        return any(r["name"] == column for r in self.conn.execute(f"PRAGMA table_info({table})"))

    def integrity_problems(self) -> list[str]:
        """SQLite's integrity check: [] when the file is sound."""
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def _add_fresh_columns(self) -> None:
        for table, column, kind in FRESH_COLUMNS + REFINEMENT_COLUMNS:
            have = {r["name"] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "MetaDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator["MetaDB"]:
        """All writes inside commit together or not at all; nested blocks join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    # -- rounds --------------------------------------------------------------------------------
    def start_round(self, round: int, info: dict | None = None) -> None:
        self.conn.execute(
            "INSERT INTO rounds(round, started_at, status, info) VALUES (?, ?, 'running', ?) "
            "ON CONFLICT(round) DO UPDATE SET status='running'",
            (round, time.time(), json.dumps(info or {})))

    def finish_round(self, round: int, status: str = "done", info: dict | None = None) -> None:
        self.conn.execute("UPDATE rounds SET finished_at=?, status=?, info=COALESCE(?, info) WHERE round=?",
                          (time.time(), status, json.dumps(info) if info is not None else None, round))

    def set_round_status(self, round: int, status: str) -> None:
        self.conn.execute("UPDATE rounds SET status=? WHERE round=?", (status, round))

    def has_rounds(self) -> bool:
        return self.conn.execute("SELECT 1 FROM rounds LIMIT 1").fetchone() is not None

    def round_statuses(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT round, status FROM rounds")}

    # -- queries -------------------------------------------------------------------------------
    def add_query(self, round: int, concept: str, text: str, engine: str, refinement: str = "",
                  page: int = 1, backend: str = "") -> int:
        cur = self.conn.execute(
            "INSERT INTO queries(round, concept, text, engine, status, created_at, refinement, page,"
            " backend) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            (round, concept, text, engine, time.time(), refinement, int(page), backend))
        return int(cur.lastrowid)

    def set_query_status(self, query_id: int, status: str, **fields) -> None:
        """status in ('pending','searched','done','failed','retry'); fields among n_results, n_kept, reward, error."""
        if status not in QUERY_STATUSES:
            raise ValueError(f"unknown query status {status!r}")
        unknown = set(fields) - QUERY_FIELDS
        if unknown:
            raise ValueError(f"unknown query fields {sorted(unknown)}")
        cols = {"status": status, **fields}
        sets = ", ".join(f"{k}=?" for k in cols)
        self.conn.execute(f"UPDATE queries SET {sets} WHERE id=?", (*cols.values(), query_id))

    def queries(self, round: int | None = None, status: str | None = None) -> list[QueryRow]:
        sql, args = "SELECT * FROM queries WHERE 1=1", []
        if round is not None:
            sql, args = sql + " AND round=?", args + [round]
        if status is not None:
            sql, args = sql + " AND status=?", args + [status]
        return [_row(QueryRow, r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def query_counts(self) -> QueryCounts:
        def count(where: str) -> int:
            return self.conn.execute(f"SELECT COUNT(*) FROM queries WHERE {where}").fetchone()[0]
        return QueryCounts(
            total=count("1"), failed=count("status IN ('failed', 'retry')"),
            retry=count("status='retry'"),
            reasks=count("refinement != ''") if self.has_column("queries", "refinement") else 0,
            awaiting=count("reward IS NULL AND status NOT IN ('failed', 'retry')"))

    def query_states(self) -> list[QueryState]:
        return [QueryState._make(r) for r in self.conn.execute(
            "SELECT id, round, status, n_results FROM queries")]

    def query_rounds(self) -> dict[int, int]:
        """Each query's round, by query id."""
        return dict(self.conn.execute("SELECT id, round FROM queries").fetchall())

    def concept_rewards(self, fresh: bool = True) -> list[ConceptReward]:
        """Every scored concept, best first (see ConceptReward). `fresh`: each query's latest
        reward (a later encoder's where the run refreshed it), else the one of its own round."""
        reward, scored = ("COALESCE(fresh_reward, reward)", "COALESCE(fresh_round, round)") \
            if fresh and self.has_column("queries", "fresh_reward") else ("reward", "round")
        first = "refinement = ''" if self.has_column("queries", "refinement") else "1"
        rows = self.conn.execute(
            f"SELECT concept, COUNT(*) AS n, AVG(CASE WHEN {first} THEN {reward} END) AS reward, "
            f"SUM(NOT ({first})) AS reasks, AVG(CASE WHEN NOT ({first}) THEN {reward} END) AS reask_reward, "
            f"SUM(n_kept) AS kept, MAX({scored}) AS scored_round "
            "FROM queries WHERE reward IS NOT NULL GROUP BY concept "
            "HAVING AVG(CASE WHEN {first} THEN {reward} END) IS NOT NULL ORDER BY reward DESC"
            .replace("{first}", first).replace("{reward}", reward))
        return [ConceptReward._make(r) for r in rows]

    def query_table(self) -> list[dict]:
        """Every query as a row of its table (columns as this database has them: one written
        before refreshed rewards or refinements lacks those), by round; for export."""
        fresh = ", fresh_reward, fresh_round" if self.has_column("queries", "fresh_reward") else ""
        refined = ", refinement, page, backend" if self.has_column("queries", "refinement") else ""
        return [dict(r) for r in self.conn.execute(
            "SELECT id, round, concept, text, engine, status, n_results, n_kept, reward, error"
            f"{fresh}{refined} FROM queries ORDER BY round, id")]

    # -- attempts ------------------------------------------------------------------------------
    def record_attempt(self, url: str, outcome: str, *, query_id: int | None = None, caption: str = "",
                       reason: str = "", sha256: str | None = None, status_code: int = 0,
                       bytes: int = 0, elapsed_s: float = 0.0) -> None:
        """One row per (url, query); a later attempt of the same pair replaces the earlier one."""
        self.conn.execute(
            "INSERT OR REPLACE INTO attempts(url, query_id, caption, outcome, reason, sha256, status_code, "
            "bytes, elapsed_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (url, query_id, caption, str(getattr(outcome, "value", outcome)), reason, sha256, status_code,
             bytes, elapsed_s, time.time()))

    def attempts_for_urls(self, urls: Iterable[str]) -> list[AttemptRow]:
        """Every attempt row of these URLs, oldest first."""
        urls = list(dict.fromkeys(urls))
        rows: list[AttemptRow] = []
        for i in range(0, len(urls), 500):
            chunk = urls[i:i + 500]
            rows += [_row(AttemptRow, r) for r in self.conn.execute(
                f"SELECT * FROM attempts WHERE url IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)]
        return rows

    def final_attempt_rows(self, urls: Iterable[str]) -> list[AttemptRow]:
        """Every attempt row of these URLs with a final outcome (not worth fetching again), oldest first."""
        return [r for r in self.attempts_for_urls(urls) if is_final(r)]

    def final_attempts(self, urls: Iterable[str]) -> dict[str, AttemptRow]:
        """For each URL already attempted with a final outcome: its first such row."""
        return first_per_url(self.final_attempt_rows(urls))

    def attempts(self, query_id: int | None = None) -> list[AttemptRow]:
        if query_id is None:
            return [_row(AttemptRow, r) for r in self.conn.execute("SELECT * FROM attempts ORDER BY id")]
        return [_row(AttemptRow, r) for r in self.conn.execute(
            "SELECT * FROM attempts WHERE query_id=? ORDER BY id", (query_id,))]

    def outcome_counts(self, query_id: int | None = None, most_first: bool = False) -> dict[str, int]:
        """Attempts by outcome, of one query or all: by outcome name, or (`most_first`) by count."""
        sql = "SELECT outcome, COUNT(*) FROM attempts" + (" WHERE query_id=?" if query_id is not None else "")
        rows = self.conn.execute(sql + " GROUP BY outcome ORDER BY " + ("2 DESC" if most_first else "outcome"),
                                 (query_id,) if query_id is not None else ())
        return {o: n for o, n in rows}

    def attempt_count(self, query_id: int) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM attempts WHERE query_id=?", (query_id,)).fetchone()[0]

    def attempt_refs(self, outcome: str | None = None, with_sha256: bool = False) -> list[AttemptRef]:
        """Attempts (of one outcome; only those naming an image), in table order."""
        where = ["outcome=?"] if outcome is not None else []
        where += ["sha256 IS NOT NULL"] if with_sha256 else []
        sql = "SELECT id, url, sha256, query_id, caption FROM attempts"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        return [AttemptRef._make(r) for r in self.conn.execute(sql, (outcome,) if outcome is not None else ())]

    def ok_attempts_without_image(self) -> list[AttemptRef]:
        """`ok` attempts whose image has no row (a second writer's leftovers), oldest first."""
        return [AttemptRef._make(r) for r in self.conn.execute(
            "SELECT a.id, a.url, a.sha256, a.query_id, a.caption FROM attempts a "
            "LEFT JOIN images i ON i.sha256 = a.sha256 "
            "WHERE a.outcome = 'ok' AND a.sha256 IS NOT NULL AND i.sha256 IS NULL ORDER BY a.id")]

    def restore_ok_attempts(self) -> int:
        """An image with no `ok` attempt: the first attempt of the URL its row names, recorded
        `duplicate` (by a second writer), is its `ok` again. Returns how many."""
        return self.conn.execute(
            "UPDATE attempts SET outcome = 'ok', reason = '' WHERE outcome = 'duplicate' AND id IN ("
            " SELECT MIN(a.id) FROM images i JOIN attempts a ON a.url = i.first_url AND a.sha256 = i.sha256"
            " WHERE NOT EXISTS (SELECT 1 FROM attempts o WHERE o.sha256 = i.sha256 AND o.outcome = 'ok')"
            " GROUP BY i.sha256)").rowcount

    def ok_attempts_of_images(self) -> list[tuple[AttemptRef, str]]:
        """Every `ok` attempt of a cached image, oldest first, with the image's `first_url`."""
        return [(AttemptRef(*r[:5]), r[5]) for r in self.conn.execute(
            "SELECT a.id, a.url, a.sha256, a.query_id, a.caption, i.first_url FROM attempts a "
            "JOIN images i ON i.sha256 = a.sha256 WHERE a.outcome = 'ok' ORDER BY a.id")]

    def mark_duplicate(self, attempt_ids: Iterable[int], reason: str) -> None:
        self.conn.executemany("UPDATE attempts SET outcome = 'duplicate', reason = ? WHERE id = ?",
                              [(reason, i) for i in attempt_ids])

    def uncached_attempt_urls(self) -> list[str]:
        """URLs of `ok` and `duplicate` attempts whose image is not cached."""
        return [r[0] for r in self.conn.execute(
            "SELECT a.url FROM attempts a LEFT JOIN images i ON i.sha256 = a.sha256 "
            "WHERE a.outcome IN ('ok', 'duplicate') AND a.sha256 IS NOT NULL AND i.sha256 IS NULL")]

    def delete_uncached_attempts(self) -> None:
        """Delete the attempts `uncached_attempt_urls` names: their URLs are fetched again."""
        self.conn.execute("DELETE FROM attempts WHERE outcome IN ('ok', 'duplicate') AND sha256 IS NOT NULL "
                          "AND sha256 NOT IN (SELECT sha256 FROM images)")

    def outcome_counts_for_round(self, round: int) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT a.outcome, COUNT(*) FROM attempts a JOIN queries q ON a.query_id = q.id "
            "WHERE q.round=? GROUP BY a.outcome ORDER BY a.outcome", (round,))
        return {o: n for o, n in rows}

    # -- images --------------------------------------------------------------------------------
    def add_image(self, sha256: str, path: str, width: int, height: int, orig_width: int, orig_height: int,
                  *, bytes: int = 0, first_url: str = "", caption: str = "", query_id: int | None = None,
                  round: int | None = None, vec_id: int | None = None) -> None:
        """A known sha256 is left as it is; a vec_id already held raises IntegrityError, so the
        transaction that records this image's `ok` attempt rolls back with it (an ignored row
        would leave the attempt `ok` and the image lost)."""
        self.conn.execute(
            "INSERT INTO images(sha256, path, width, height, orig_width, orig_height, bytes, first_url, "
            "caption, query_id, round, vec_id, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(sha256) DO NOTHING",
            (sha256, path, width, height, orig_width, orig_height, bytes, first_url, caption, query_id, round,
             vec_id, time.time()))

    def has_image(self, sha256: str) -> bool:
        return self.conn.execute("SELECT 1 FROM images WHERE sha256=?", (sha256,)).fetchone() is not None

    def image(self, sha256: str) -> ImageRow | None:
        row = self.conn.execute("SELECT * FROM images WHERE sha256=?", (sha256,)).fetchone()
        return _row(ImageRow, row) if row else None

    def images_for_query(self, query_id: int) -> list[ImageRow]:
        """Images this query brought in first (its `ok` attempts)."""
        return [_row(ImageRow, r) for r in self.conn.execute(
            "SELECT * FROM images WHERE query_id=? ORDER BY added_at", (query_id,))]

    def stored_images(self) -> list[StoredImage]:
        """Every images row, in table order."""
        return [StoredImage._make(r) for r in self.conn.execute(
            "SELECT sha256, path, bytes, vec_id, query_id, round FROM images")]

    def vec_ids(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT vec_id FROM images WHERE vec_id IS NOT NULL")}

    def image_reward(self, table: str = "images") -> str:
        """SQL for an images row's freshest reward (the re-scored one where the database has it)."""
        return (f"COALESCE({table}.fresh_reward, {table}.reward)"
                if self.has_column("images", "fresh_reward") else f"{table}.reward")

    def best_image_paths(self, concept: str, limit: int) -> list[str]:
        """Paths of the images the concept's queries kept, highest freshest reward first."""
        return [image.path for image in self.concept_images(concept, limit)]

    def concept_images(self, concept: str, limit: int) -> list[KeptImage]:
        """The images the concept's queries kept, highest freshest reward first, at most `limit`."""
        reward = self.image_reward()
        asked = "queries.page, queries.backend" if self.has_column("queries", "refinement") else "1, ''"
        return [KeptImage._make(r) for r in self.conn.execute(
            f"SELECT images.sha256, images.path, images.first_url, images.caption, {reward}, "
            f"queries.engine, queries.text, {asked} FROM images "
            "JOIN queries ON images.query_id = queries.id "
            f"WHERE queries.concept = ? ORDER BY {reward} DESC LIMIT ?", (concept, limit))]

    def exported_images(self, min_reward: float | None = None, page: int = 1000) -> Iterator[ExportedImage]:
        """Every kept image, in table order (the order they were kept), read `page` rows at a
        time by rowid, one statement per page: memory stays flat however large the run, and no
        read is held open while the caller works on a page. `min_reward`: only images whose freshest reward
        is at least it (an image never scored has none and is left out). Text columns are read
        as bytes and decoded with U+FFFD for what is not UTF-8, so that one row written by
        another tool does not stop the walk."""
        reward = self.image_reward("i")
        refinement = "CAST(q.refinement AS BLOB)" if self.has_column("queries", "refinement") else "NULL"
        text = ("i.sha256", "i.path", "i.caption", "i.first_url", "q.concept", "q.text")
        above = f" AND {reward} >= ?" if min_reward is not None else ""
        threshold = (float(min_reward),) if min_reward is not None else ()
        sql = (f"SELECT i.rowid, {', '.join(f'CAST({c} AS BLOB)' for c in text)}, {refinement}, {reward}, "
               "i.round, i.width, i.height FROM images i LEFT JOIN queries q ON i.query_id = q.id "
               f"WHERE i.rowid > ?{above} ORDER BY i.rowid LIMIT ?")
        last = -1
        while True:
            args = (last, *threshold, page)
            rows = self.conn.execute(sql, args).fetchall()
            for r in rows:
                yield ExportedImage(*map(_lenient_text, r[1:8]), *r[8:])
            if len(rows) < page:
                return
            last = rows[-1][0]

    def concept_rounds(self, concepts: Iterable[str]) -> dict[str, list[int]]:
        """The rounds each of `concepts` was asked in, ascending."""
        concepts = list(dict.fromkeys(concepts))
        out: dict[str, list[int]] = {c: [] for c in concepts}
        for i in range(0, len(concepts), 500):
            chunk = concepts[i:i + 500]
            for concept, round_ in self.conn.execute(
                    f"SELECT DISTINCT concept, round FROM queries WHERE concept IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY concept, round", chunk):
                out[concept].append(int(round_))
        return out

    def iter_images(self, after_vec_id: int = -1) -> Iterator[ImageRow]:
        for r in self.conn.execute("SELECT * FROM images WHERE vec_id > ? ORDER BY vec_id", (after_vec_id,)):
            yield _row(ImageRow, r)

    def next_vec_id(self) -> int:
        (n,) = self.conn.execute("SELECT COALESCE(MAX(vec_id), -1) + 1 FROM images").fetchone()
        return int(n)

    def image_stats(self) -> tuple[int, int]:
        """(number of images, their total bytes)."""
        n, b = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM images").fetchone()
        return int(n), int(b)

    def images_in_round(self, round: int) -> list[ImageRow]:
        """Images first kept in this round, in the order they came."""
        return [_row(ImageRow, r) for r in self.conn.execute(
            "SELECT * FROM images WHERE round=? ORDER BY added_at", (round,))]

    def first_round_with_images(self) -> int | None:
        row = self.conn.execute("SELECT MIN(round) FROM images WHERE round IS NOT NULL").fetchone()
        return None if row[0] is None else int(row[0])

    def scored_images(self, before_round: int) -> Iterator[ScoredImage]:
        """Images of earlier rounds with a reward, streamed (reward: the freshest one), in sha256
        order."""
        for r in self.conn.execute(
                "SELECT sha256, path, caption, COALESCE(fresh_reward, reward) AS reward FROM images "
                "WHERE round < ? AND reward IS NOT NULL ORDER BY sha256", (before_round,)):
            yield _row(ScoredImage, r)

    def reward_moments(self, before_round: int) -> tuple[int, float, float]:
        """(count, mean, standard deviation) of the freshest rewards of earlier rounds' images."""
        n, mean, sq = self.conn.execute(
            "SELECT COUNT(*), AVG(r), AVG(r * r) FROM (SELECT COALESCE(fresh_reward, reward) AS r "
            "FROM images WHERE round < ? AND reward IS NOT NULL)", (before_round,)).fetchone()
        if not n:
            return 0, 0.0, 0.0
        return int(n), float(mean), max(float(sq) - float(mean) ** 2, 0.0) ** 0.5

    def refresh_sample(self, before_round: int, per_query: int) -> list[RefreshItem]:
        """For each scored query of earlier rounds, up to `per_query` of the images it kept (the
        same ones every time: lowest sha256, i.e. an arbitrary but fixed draw), by query."""
        return [_row(RefreshItem, r) for r in self.conn.execute(
            "SELECT query_id, round, concept, sha256, path, caption FROM ("
            " SELECT i.query_id, q.round, q.concept, i.sha256, i.path, i.caption,"
            "  ROW_NUMBER() OVER (PARTITION BY i.query_id ORDER BY i.sha256) AS n"
            " FROM images i JOIN queries q ON i.query_id = q.id"
            " WHERE q.round < ? AND q.reward IS NOT NULL) WHERE n <= ? ORDER BY query_id, sha256",
            (before_round, per_query))]

    def set_image_rewards(self, rewards: dict[str, float]) -> None:
        self.conn.executemany("UPDATE images SET reward=? WHERE sha256=?",
                              [(float(r), sha) for sha, r in rewards.items()])

    def set_fresh_rewards(self, round: int, images: dict[str, float], queries: dict[int, float]) -> None:
        """Rewards recomputed by round `round`'s encoder; the rewards of their own round stay."""
        self.conn.executemany("UPDATE images SET fresh_reward=?, fresh_round=? WHERE sha256=?",
                              [(float(r), round, sha) for sha, r in images.items()])
        self.conn.executemany("UPDATE queries SET fresh_reward=?, fresh_round=? WHERE id=?",
                              [(float(r), round, qid) for qid, r in queries.items()])

    # -- search results ------------------------------------------------------------------------
    def get_search_results(self, engine: str, query: str) -> list[dict] | None:
        row = self.conn.execute("SELECT results FROM search_cache WHERE engine=? AND query=?",
                                (engine, query)).fetchone()
        return json.loads(row[0]) if row else None

    def put_search_results(self, engine: str, query: str, results: list[dict]) -> None:
        self.conn.execute("INSERT OR REPLACE INTO search_cache(engine, query, results, created_at) VALUES (?, ?, ?, ?)",
                          (engine, query, json.dumps(results), time.time()))

    # -- events --------------------------------------------------------------------------------
    def log_event(self, kind: str, **data) -> None:
        self.conn.execute("INSERT INTO events(time, kind, message) VALUES (?, ?, ?)",
                          (time.time(), kind, json.dumps(data, default=str)))

    def events(self, kind: str | None = None) -> list[dict]:
        sql = "SELECT * FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY id"
        rows = self.conn.execute(sql, (kind,) if kind else ())
        return [dict(r) | {"message": json.loads(r["message"])} for r in rows]
