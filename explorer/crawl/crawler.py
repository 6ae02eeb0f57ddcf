"""The crawl pipeline: URLs -> fetchers (downloader + images.prepare) -> cache.

Each item gets exactly one UrlAttempt row in the DB with one UrlOutcome. A URL already fetched to a
final outcome is never fetched again: its earlier row answers (re-fetch idempotence).
Kept images are exact-deduplicated by sha256, near-deduplicated against the cache with FAISS,
and dropped when they are near-copies of the target's test images.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from cache.db import AttemptRow, MetaDB, WriterBusy, WriterLock, first_per_url
from cache.index import VectorIndex
from cache.paths import db_path_for, index_path_for
from cache.store import ImageStore, StoreError
from cache.verify import Embedding
from explorer.crawl import images
from explorer.config import CrawlConfig
from explorer.crawl.decontam import HASH_BYTES, LeakIndex
from explorer.errors import UserError
from explorer.crawl.fetchers import Fetched, LocalFetcher, ProcessFetcher

if TYPE_CHECKING:
    from explorer.crawl.ray_fetcher import RayFetcher
from explorer.records import Candidate, UrlOutcome

EmbedFn = Callable[[list[Candidate]], np.ndarray]  # candidates -> [N, D] unit-norm float32
CHEAP_DIM = images.EMBED_SIDE * images.EMBED_SIDE * 3
# what the near-duplicate index holds for each stored file, for `cache verify` to check and mend
CHEAP_EMBEDDING = Embedding(images.embed_bytes, CHEAP_DIM)


@dataclass(frozen=True)
class CrawlItem:
    """One URL to fetch, with the caption (search title) and the query that found it."""

    url: str
    caption: str = ""
    query_id: int | None = None
    round: int | None = None


@dataclass
class UrlAttempt:
    """What became of one CrawlItem (mirrors its `attempts` row)."""

    url: str
    outcome: UrlOutcome
    reason: str = ""
    query_id: int | None = None
    caption: str = ""
    sha256: str | None = None
    status_code: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    recorded_before: bool = False         # True: this (url, query) was already in the DB; nothing done
    vec_id: int | None = None             # the kept image's id in the near-dup index


@dataclass
class Cache:
    """The pieces of a cache directory: files, metadata, and the near-duplicate index."""

    store: ImageStore
    db: MetaDB
    index: VectorIndex
    index_path: Path
    lock: WriterLock | None = None

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.release()


def open_cache(cache_dir: str | Path, cfg: CrawlConfig, db_path: str | Path | None = None,
               dim: int = CHEAP_DIM, index_name: str = "cheap") -> Cache:
    """Open (or create) CACHE_DIR: images/, explore.db (unless `db_path` puts it elsewhere), and
    the index beside the DB (`index_path_for`), as their one writer: UserError while another
    process writes that DB (runs with their own DBs still share the image store)."""
    cache_dir = Path(cache_dir)
    db_path = db_path_for(cache_dir, db_path)
    try:
        lock = WriterLock(db_path).acquire()
    except WriterBusy as e:
        raise UserError(str(e)) from None
    try:
        db = MetaDB(db_path)
        store = ImageStore(cache_dir, cfg.cache_max_bytes)  # the cap counts every run's files
        index_path = index_path_for(cache_dir, db_path, index_name)
        return Cache(store, db, VectorIndex.load(index_path, dim), index_path, lock)
    except BaseException:
        lock.release()
        raise


def make_fetcher(cfg: CrawlConfig, allow: list[str], corpus_root: Path | None,
                 store_root: Path | None = None) -> "LocalFetcher | ProcessFetcher | RayFetcher":
    """The fetcher crawl.pool names. `store_root` is the cache directory, where Ray workers write
    the stored files themselves (the other pools send the bytes back to be written here)."""
    if cfg.pool == "thread":
        return LocalFetcher(cfg, allow, corpus_root)
    if cfg.pool == "process":
        return ProcessFetcher(cfg, allow, corpus_root)
    if cfg.pool == "ray":
        from explorer.crawl.ray_fetcher import RayFetcher  # (ray is an optional extra)
        return RayFetcher(cfg, allow, corpus_root, store_root)
    raise ValueError(f"crawl.pool must be thread, process or ray, not {cfg.pool!r}")


class Crawler:
    """Downloads, prepares, dedups and records a list of CrawlItems.

    `embed_fn` maps candidates to unit vectors for the near-dup check; by default the
    cheap embedding computed in the worker. `leak_index` holds the target's test images
    (explorer/crawl/decontam.py) and judges each image's copy hashes and cheap embedding.
    `file://` URLs are read only from under `corpus_root` (the local corpus engine's folder; anywhere with crawl.corpus_allow_outside), never when it is None.
    When the store cannot write (cap reached, disk full, read-only), the images get `disk_full`
    (retryable) attempts; with `stop_when_full`, `crawl` then raises that StoreError once the
    batch is recorded, so a run stops with one clear error and resumes once space returns.
    """

    def __init__(self, cfg: CrawlConfig, store: ImageStore, db: MetaDB, index: VectorIndex,
                 allow: Iterable[str] = (), embed_fn: EmbedFn | None = None,
                 leak_index: LeakIndex | None = None, corpus_root: Path | None = None,
                 index_path: str | Path | None = None, stop_when_full: bool = False) -> None:
        if leak_index is None or leak_index.hashes.ntotal == 0:
            cfg = replace(cfg, leak_hamming=-1)  # (no test views: the workers make no copy hashes)
        self.cfg, self.store, self.db, self.index = cfg, store, db, index
        self.allow = list(allow)
        self.embed_fn = embed_fn
        self.leak_index = leak_index
        self.corpus_root = corpus_root
        self.index_path = Path(index_path) if index_path else None
        self._fetcher: LocalFetcher | ProcessFetcher | RayFetcher | None = None
        self._next_vec_id = db.next_vec_id()
        self._inflight: dict[str, asyncio.Event] = {}   # URL -> set when its outcome is recorded
        self.stop_when_full = stop_when_full
        self.store_error: StoreError | None = None
        self._commit_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @classmethod
    def for_cache(cls, cache: Cache, cfg: CrawlConfig, **kwargs) -> "Crawler":
        return cls(cfg, cache.store, cache.db, cache.index, index_path=cache.index_path, **kwargs)

    def __enter__(self) -> "Crawler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    @property
    def fetcher(self) -> "LocalFetcher | ProcessFetcher | RayFetcher":
        """Downloads and prepares (crawl.pool: threads here, worker processes, or Ray workers that
        write the files into the store themselves), made on first use."""
        if self._fetcher is None:
            self._fetcher = make_fetcher(self.cfg, self.allow, self.corpus_root, self.store.root)
        return self._fetcher

    # -- the pipeline --------------------------------------------------------------------------
    async def crawl(self, items: Iterable[CrawlItem]) -> list[UrlAttempt]:
        """One UrlAttempt per distinct (url, query_id), recorded in the DB; the index is saved at the end."""
        items = list({(it.url, it.query_id): it for it in items}.values())
        # Calls run concurrently (one per query): a URL another call is fetching now is
        # answered from its recorded outcome, not fetched twice (nor kept twice).
        while busy := [self._inflight[it.url] for it in items if it.url in self._inflight]:
            await asyncio.gather(*(event.wait() for event in busy))
        rows = self.db.final_attempt_rows(it.url for it in items)
        prior = first_per_url(rows)
        mine = {(r.url, r.query_id): r for r in rows}
        attempts: list[UrlAttempt] = []
        to_fetch: dict[str, CrawlItem] = {}       # one request per URL, however many queries found it
        followers: list[CrawlItem] = []           # same URL as an item fetched now, another query
        answered: list[UrlAttempt] = []
        for it in items:
            row = prior.get(it.url)
            if (it.url, it.query_id) in mine:
                attempts.append(self._from_row(it, mine[(it.url, it.query_id)], recorded_before=True))
            elif row is not None:
                answered.append(self._from_row(it, row, recorded_before=False))
            elif it.url in to_fetch:
                followers.append(it)
            else:
                to_fetch[it.url] = it
        if to_fetch:
            events = {url: self._inflight.setdefault(url, asyncio.Event()) for url in to_fetch}
            try:
                fetched = await self._fetch_all(list(to_fetch.values()))
            finally:
                for url, event in events.items():
                    del self._inflight[url]
                    event.set()
            attempts += fetched
            by_url = {a.url: a for a in fetched}
            answered += [self._from_row(it, by_url[it.url], recorded_before=False) for it in followers]
        if answered:
            with self.db.transaction():
                for a in answered:
                    self._record(a)
            attempts += answered
        self._save_index()
        if self.stop_when_full and self.store_error is not None:
            error, self.store_error = self.store_error, None
            raise error
        return attempts

    def _save_index(self) -> None:
        if self.index_path is None:
            return
        try:
            self.index.save(self.index_path)
        except (OSError, RuntimeError) as e:  # faiss reports write errors as RuntimeError
            if self.store_error is None:  # else the store's error says it already
                raise StoreError(f"cannot write the index {self.index_path}: {str(e).splitlines()[0]}") from e

    async def _fetch_all(self, items: list[CrawlItem]) -> list[UrlAttempt]:
        out: list[UrlAttempt] = []

        async with self.fetcher.session() as fetch:  # (its limits: requests in flight, per host and in all)
            async def one(item: CrawlItem) -> tuple[CrawlItem, Fetched]:
                return item, await fetch(item.url)

            tasks = [asyncio.ensure_future(one(it)) for it in items]
            batch = []
            try:
                for next_done in asyncio.as_completed(tasks):
                    batch.append(await next_done)
                    if len(batch) >= self.cfg.db_batch:
                        out += await self._commit_serially(batch)
                        batch = []
            except BaseException:  # cancelled, or a broken setup: no task left behind to log later
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            if batch:
                out += await self._commit_serially(batch)
        return out

    async def _commit_serially(self, batch: list) -> list[UrlAttempt]:
        """`_commit`, one batch at a time: concurrent calls (one per query) that both found the
        same new image would otherwise each judge it before the other committed, record two
        `ok` attempts for one row and index it twice."""
        loop = asyncio.get_running_loop()
        if self._commit_lock is None or self._commit_lock[0] is not loop:  # a lock serves one loop
            self._commit_lock = (loop, asyncio.Lock())
        async with self._commit_lock[1]:
            return await self._commit(batch)

    async def _commit(self, batch: list) -> list[UrlAttempt]:
        """Dedup one batch of fetched+prepared items, store the new images, record every attempt."""
        attempts: list[UrlAttempt] = []
        cands: list[tuple[UrlAttempt, CrawlItem, Candidate, np.ndarray]] = []
        first_of: dict[str, UrlAttempt] = {}        # sha256 -> the batch's first attempt with it
        copies: list[tuple[UrlAttempt, UrlAttempt]] = []  # (later attempt, first attempt) with equal sha256
        written = {got.prepared[0].sha256 for _, got in batch if got.stored}  # files a Ray worker wrote
        for item, got in batch:
            fr, result = got.result, got.prepared
            a = UrlAttempt(url=item.url, outcome=UrlOutcome.OK, query_id=item.query_id, caption=item.caption,
                        status_code=fr.status, elapsed_s=fr.elapsed_s, bytes=got.nbytes)
            attempts.append(a)
            if result is None:
                a.outcome, a.reason = fr.outcome or UrlOutcome.CONNECTION_ERROR, fr.reason
                continue
            if isinstance(result, images.Rejection):
                a.outcome, a.reason = result.outcome, result.reason
                continue
            cand, vec = result
            a.sha256 = cand.sha256
            if cand.sha256 in first_of:
                copies.append((a, first_of[cand.sha256]))
                continue
            if self.db.has_image(cand.sha256):
                a.outcome, a.reason = UrlOutcome.DUPLICATE, "same sha256 already cached"
                continue
            first_of[cand.sha256] = a
            cand.url, cand.caption, cand.query_id = item.url, item.caption, item.query_id
            cands.append((a, item, cand, vec))

        if cands:
            if self.embed_fn is not None:
                vecs = np.asarray(await asyncio.to_thread(self.embed_fn, [c for _, _, c, _ in cands]), np.float32)
            else:
                vecs = np.stack([v for *_, v in cands])
            await self._judge_and_store(cands, vecs, written)
        for a, first in copies:  # same bytes as an earlier item of this batch: share its fate
            if first.outcome == UrlOutcome.OK:
                a.outcome, a.reason = UrlOutcome.DUPLICATE, "same sha256 already cached"
            else:
                a.outcome, a.reason = first.outcome, first.reason

        with self.db.transaction():
            for a in attempts:
                self._record(a)
            for a, item, cand, _ in cands:
                if a.outcome == UrlOutcome.OK:
                    self.db.add_image(cand.sha256, self.store.relpath(cand.sha256), cand.width, cand.height,
                                      cand.orig_width, cand.orig_height, bytes=len(cand.data), first_url=item.url,
                                      caption=item.caption, query_id=item.query_id, round=item.round,
                                      vec_id=a.vec_id)
        if written:
            self._discard_unkept(written, attempts)
        return attempts

    def _discard_unkept(self, written: set[str], attempts: list[UrlAttempt]) -> None:
        """Remove the files that workers wrote for images this batch did not keep (near
        duplicates, test leaks, ...), unless the cache holds their sha256 (an earlier keeper)."""
        kept = {a.sha256 for a in attempts if a.outcome == UrlOutcome.OK}
        for sha256 in written - kept:
            if not self.db.has_image(sha256):
                try:
                    self.store.discard(sha256)
                except OSError:  # (a read-only cache: `cache verify` finds the orphan)
                    pass

    async def _judge_and_store(self, cands: list, vecs: np.ndarray, written: set[str] = frozenset()) -> None:
        """Leak check, near-dup check (against the cache and within the batch), then store the
        keepers (`written`: the sha256 of those whose files a worker wrote already)."""
        # Matrices of a few hundred rows gain nothing from BLAS threads, whose spin-waiting
        # after each call costs CPU the crawl needs
        # (the leak check in a thread: its search and verification leave the event loop fetching)
        leaks = await asyncio.to_thread(self._leaks, cands)
        with threadpool_limits(limits=1, user_api="blas"):
            near = self.index.max_similarity(vecs)
            batch_sims = vecs @ vecs.T  # [N, N] cosine within the batch
        kept: list[int] = []
        for j, ((a, _, cand, _), leak, near_sim) in enumerate(zip(cands, leaks, near)):
            if leak is not None:
                a.outcome, a.reason = UrlOutcome.TEST_LEAK, leak
                continue
            sim = max(float(near_sim), float(batch_sims[j, kept].max()) if kept else -np.inf)
            if sim >= self.cfg.near_dup_threshold:
                a.outcome, a.reason = UrlOutcome.NEAR_DUPLICATE, f"cosine {sim:.3f} to a cached image"
                continue
            kept.append(j)
        # file writes off the event loop; the cap is checked in order, one file at a time
        stored = await asyncio.to_thread(self._store_files, [cands[j] for j in kept], written)
        new_ids = []
        for j, error in zip(kept, stored):
            a = cands[j][0]
            if error is not None:
                a.outcome, a.reason = UrlOutcome.DISK_FULL, error
                continue
            a.vec_id = self._next_vec_id
            self._next_vec_id += 1
            new_ids.append((j, a.vec_id))
        if new_ids:
            self.index.add(vecs[[j for j, _ in new_ids]], np.asarray([v for _, v in new_ids]))

    def _leaks(self, cands: list) -> list[str | None]:
        """Per candidate: why it is a copy of a target test image, or None. Judged on the signatures
        made in the worker (copy hashes, cheap embedding), whatever `embed_fn` is."""
        if self.leak_index is None or not len(self.leak_index):
            return [None] * len(cands)
        hashes = [np.frombuffer(cand.copy_hash, np.uint8).reshape(-1, HASH_BYTES) if cand.copy_hash else None
                  for _, _, cand, _ in cands]
        with threadpool_limits(limits=1, user_api="blas"):
            return self.leak_index.match(np.stack([v for *_, v in cands]), hashes, self.cfg.leak_threshold,
                                         self.cfg.leak_hamming, self.cfg.leak_mismatch)

    def _store_files(self, keepers: list, written: set[str] = frozenset()) -> list[str | None]:
        """Write each keeper's file (count it, when a worker wrote it); per keeper None, or why it
        could not be written."""
        errors: list[str | None] = []
        for _, _, cand, _ in keepers:
            try:
                if cand.sha256 in written:
                    self.store.claim(cand.sha256, cand.data)
                else:
                    self.store.put(cand.sha256, cand.data)
                errors.append(None)
            except StoreError as e:  # the cap, a full disk, a read-only folder
                errors.append(str(e))
                self.store_error = self.store_error or e
        return errors

    def _record(self, a: UrlAttempt) -> None:
        self.db.record_attempt(a.url, a.outcome.value, query_id=a.query_id, caption=a.caption, reason=a.reason,
                               sha256=a.sha256, status_code=a.status_code, bytes=a.bytes, elapsed_s=a.elapsed_s)

    @staticmethod
    def _from_row(item: CrawlItem, row: AttemptRow | UrlAttempt, recorded_before: bool) -> UrlAttempt:
        """An item answered by an earlier attempt of its URL (no network): its attempts row, or
        the attempt made now of the same URL for another query."""
        outcome = UrlOutcome(row.outcome)
        if recorded_before:
            return UrlAttempt(url=item.url, outcome=outcome, reason=row.reason or "", query_id=item.query_id,
                           caption=row.caption or "", sha256=row.sha256, status_code=row.status_code or 0,
                           bytes=row.bytes or 0, elapsed_s=row.elapsed_s or 0.0, recorded_before=True)
        earlier = outcome.value
        if outcome == UrlOutcome.OK:
            outcome = UrlOutcome.DUPLICATE
        return UrlAttempt(url=item.url, outcome=outcome, reason=f"URL already fetched ({earlier})",
                       query_id=item.query_id, caption=item.caption, sha256=row.sha256,
                       status_code=row.status_code or 0)

    # -- recovery ------------------------------------------------------------------------------
    def reconcile_index(self) -> int:
        """Add to the index the images the DB has but the index lacks (a crash between DB commit
        and index save); returns how many were added."""
        have = set(self.index.ids().tolist())
        missing = [r for r in self.db.iter_images() if r.vec_id is not None and r.vec_id not in have]
        if not missing:
            return 0
        if self.embed_fn is not None:
            cands = [Candidate(r.sha256, self.store.read(r.sha256), r.width, r.height,
                               r.orig_width, r.orig_height) for r in missing]
            vecs = np.asarray(self.embed_fn(cands), np.float32)
        else:
            vecs = np.stack([images.embed_bytes(self.store.read(r.sha256)) for r in missing])
        self.index.add(vecs, np.asarray([r.vec_id for r in missing]))
        return len(missing)


@dataclass
class CrawlTally:
    """What `crawl_chunks` did over all its chunks: counts only, so that a list of millions of
    URLs is summed up without its attempts being kept."""

    attempted: int = 0                    # distinct (url, query) of each chunk
    done_before: int = 0                  # of those, recorded before (or in an earlier chunk)
    outcomes: dict[str, int] = field(default_factory=dict)  # of the attempts made now

    def add(self, attempts: list[UrlAttempt]) -> None:
        self.attempted += len(attempts)
        self.done_before += sum(a.recorded_before for a in attempts)
        for name, n in outcome_summary(attempts).items():
            self.outcomes[name] = self.outcomes.get(name, 0) + n
        self.outcomes = dict(sorted(self.outcomes.items()))


async def crawl_chunks(crawler: Crawler, chunks: Iterable[list[CrawlItem]]) -> CrawlTally:
    """Crawl one chunk after another (`explore fetch` on a long list): each is fetched,
    recorded and its index saved before the next is read, so memory follows the chunk, and a
    stop loses only the fetches not yet recorded, as in any crawl. A URL repeated in a later
    chunk is answered by its recorded attempt, as on a rerun."""
    tally = CrawlTally()
    for chunk in chunks:
        tally.add(await crawler.crawl(chunk))
    return tally


def outcome_summary(attempts: list[UrlAttempt]) -> dict[str, int]:
    """Counts by outcome of the attempts made now (rows recorded before are left out)."""
    counts: dict[str, int] = {}
    for a in attempts:
        if not a.recorded_before:
            counts[a.outcome.value] = counts.get(a.outcome.value, 0) + 1
    return dict(sorted(counts.items()))
