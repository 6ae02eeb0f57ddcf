"""What every search engine shares: the outcome record, result cleaning, backoff with full
jitter, a rate cap, and the retry loop (ARCHITECTURE.md, "Guards").

An engine answers `search(query, max_results, page=1, backend="") -> SearchOutcome`: `page` is
the engine's results page (2 = the results after the first page's), `backend` one of the
engine's `backends` (its image sources; "" = its default). Expected failures (rate limit,
timeout, HTTP error, bad JSON, no results) come back as a value with a reason, after retries;
only bugs and the user's own mistakes raise.
"""
from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, ClassVar
from urllib.parse import urlsplit

from explorer.config import CrawlConfig
from explorer.records import SearchResult

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class SearchOutcome:
    """The answer to one search: results, or an error with a reason.

    `attempts` counts requests actually sent (0 = answered from the search cache).
    `retryable` says whether asking again later may succeed (rate limit, timeout, 5xx).
    """

    results: list[SearchResult]
    error: str = ""
    retryable: bool = False
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class SearchAttempt:
    """One request to an engine: its raw rows (dicts with the ddgs keys), or why it failed."""

    rows: list = field(default_factory=list)
    error: str = ""
    retryable: bool = False


def clean_results(rows, max_results: int, schemes: tuple[str, ...] = ("http", "https"),
                  default_source: str = "") -> list[SearchResult]:
    """Turn raw rows into at most `max_results` SearchResults.

    Drops rows that are not dicts, whose `image` is not a URL with one of `schemes`, and
    repeats of an image URL already kept; fills an empty `source` with `default_source`.
    """
    if not isinstance(rows, (list, tuple)):
        return []
    kept: list[SearchResult] = []
    seen: set[str] = set()
    for row in rows:
        if len(kept) >= max_results:
            break
        if not isinstance(row, dict):
            continue
        result = SearchResult.from_dict(row)
        image = result.image.strip()
        try:
            parts = urlsplit(image)
        except ValueError:                # e.g. an unclosed IPv6 bracket
            continue
        if parts.scheme.lower() not in schemes or (parts.scheme != "file" and not parts.netloc):
            continue
        if image in seen:
            continue
        seen.add(image)
        if image != result.image:
            result = dataclasses.replace(result, image=image)
        if not result.source and default_source:
            result = dataclasses.replace(result, source=default_source)
        kept.append(result)
    return kept


def check_refinement(engine: "Engine", page: int, backend: str) -> None:
    """A page or backend the engine does not offer is the caller's bug, not a failed search."""
    if page < 1 or (page > 1 and not engine.pages):
        raise ValueError(f"engine {engine.name} has no results page {page}")
    if backend and backend not in engine.backends:
        raise ValueError(f"engine {engine.name} has no backend {backend!r} "
                         f"(it has: {', '.join(engine.backends) or 'none'})")


def search_key(query: str, page: int = 1, backend: str = "") -> str:
    """How one request is named in the search cache: the query text alone for its first page
    from the default backend (as before refinements existed), else text, page and backend."""
    if page == 1 and not backend:
        return query
    return f"{query}\x1fpage={page}\x1fbackend={backend}"


@dataclass
class Backoff:
    """Exponential backoff with full jitter: before retry `i` (0-based) wait
    uniform(0, min(max_s, base_s * 2**i)) seconds. `sleep` and `rng` are injectable so tests
    record delays instead of waiting."""

    base_s: float
    retries: int
    max_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Sleep = asyncio.sleep

    def cap(self, retry: int) -> float:
        return min(self.max_s, self.base_s * 2.0 ** retry)

    def delay(self, retry: int) -> float:
        return self.rng.uniform(0.0, self.cap(retry))

    async def wait(self, retry: int) -> float:
        delay = self.delay(retry)
        await self.sleep(delay)
        return delay


class RateLimiter:
    """At most one start per `interval_s` seconds; concurrent callers queue in arrival order."""

    def __init__(self, interval_s: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self._next_start = -math.inf
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.interval_s <= 0:
            return
        async with self._lock:
            now = self.clock()
            if now < self._next_start:
                await self.sleep(self._next_start - now)
                now = max(self.clock(), self._next_start)
            self._next_start = now + self.interval_s


class Engine(abc.ABC):
    """An image search engine. Every engine returns the same SearchResult records."""

    name: ClassVar[str]
    # URL schemes a result's `image` may have; only the corpus engine adds "file".
    schemes: ClassVar[tuple[str, ...]] = ("http", "https")
    # Whether page 2, 3, ... bring further results (the policy's "next page" refinement).
    pages: ClassVar[bool] = False
    # Image sources a query may be sent to besides the default (the "backend" refinement).
    backends: tuple[str, ...] = ()

    @abc.abstractmethod
    async def search(self, query: str, max_results: int, page: int = 1,
                     backend: str = "") -> SearchOutcome:
        """Up to `max_results` cleaned results for `query` (results page `page`, from
        `backend`, "" = the default), or an error value."""

    async def aclose(self) -> None:
        """Release connections and threads; the engine is not used afterwards."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class RetryingEngine(Engine):
    """An engine behind the network: each attempt waits for the rate cap, a retryable failure
    backs off and tries again, at most `cfg.search_retries` times."""

    def __init__(self, cfg: CrawlConfig, *, min_interval_s: float = 0.0,
                 sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic,
                 rng: random.Random | None = None):
        self.cfg = cfg
        self.backoff = Backoff(base_s=cfg.search_backoff_s, retries=cfg.search_retries,
                               max_s=cfg.search_backoff_max_s, rng=rng or random.Random(), sleep=sleep)
        self.limiter = RateLimiter(min_interval_s, clock=clock, sleep=sleep)

    @abc.abstractmethod
    async def attempt(self, query: str, max_results: int, page: int, backend: str) -> SearchAttempt:
        """Send one request; never raise for an expected failure."""

    async def search(self, query: str, max_results: int, page: int = 1,
                     backend: str = "") -> SearchOutcome:
        check_refinement(self, page, backend)
        attempts = 0
        while True:
            await self.limiter.wait()
            result = await self.attempt(query, max_results, page, backend)
            attempts += 1
            if not result.error or not result.retryable or attempts > self.backoff.retries:
                break
            delay = await self.backoff.wait(attempts - 1)
            log.info("%s: %r failed (%s); retry %d/%d after %.1f s", self.name, query,
                     result.error, attempts, self.backoff.retries, delay)
        if result.error:
            log.warning("%s: %r gave up after %d attempt(s): %s", self.name, query, attempts,
                        result.error)
        results = clean_results(result.rows, max_results, self.schemes, default_source=self.name)
        return SearchOutcome(results, result.error, result.retryable, attempts)


class SearchWatch:
    """Tells an engine that is unavailable from queries that fail: `streak` failed searches in a
    row (or a round whose every search failed) mean the engine is down. While it is down the
    crawl pauses, each pause twice the last (from `pause_s`, at most `pause_max_s`); once it has
    been down `patience_s` (counted from the first failure since the last answer) it is given
    up on. A search that answers, even with no results, means the engine is up."""

    def __init__(self, streak: int, pause_s: float, pause_max_s: float, patience_s: float, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self.streak = streak
        self.pause_s = pause_s
        self.pause_max_s = pause_max_s
        self.patience_s = patience_s
        self.clock = clock
        self.sleep = sleep
        self.failures = 0                 # failed searches since the last answer
        self.down_since: float | None = None
        self.pauses = 0
        self.last_error = ""
        self.probe = "none"               # after a pause: "open" (one search may try), "out" (it is trying)

    def admit(self) -> bool:
        """May a search be sent now? Not while down; after a pause, one probe at a time, so that
        an engine still down costs one failed search per pause, not a burst of them."""
        if self.down or self.probe == "out":
            return False
        if self.probe == "open":
            self.probe = "out"
        return True

    def answered(self) -> None:
        self.failures, self.down_since, self.pauses, self.probe = 0, None, 0, "none"

    def failed(self, error: str) -> None:
        if self.probe == "out":
            self.probe = "none"
        if self.down_since is None:
            self.down_since = self.clock()
        self.failures += 1
        self.last_error = error

    def round_failed(self) -> None:
        """Every search of a round failed: down, however few they were."""
        self.failures = max(self.failures, self.streak)

    @property
    def down(self) -> bool:
        return self.failures >= self.streak

    def down_for(self) -> float:
        return 0.0 if self.down_since is None else self.clock() - self.down_since

    def out_of_patience(self) -> bool:
        return self.down and self.down_for() >= self.patience_s

    def next_pause(self) -> float:
        """The next pause: doubling, capped, and never past the patience."""
        grown = self.pause_s * 2.0 ** min(self.pauses, 60)
        return max(0.0, min(grown, self.pause_max_s, self.patience_s - self.down_for()))

    async def pause(self) -> float:
        """Wait out the next pause; afterwards one more failure means down again (a probe)."""
        delay = self.next_pause()
        self.pauses += 1
        await self.sleep(delay)
        self.failures, self.probe = self.streak - 1, "open"
        return delay
