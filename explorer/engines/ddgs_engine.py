"""The real web: image search through ddgs (the maintained successor of duckduckgo-search).

ddgs is synchronous, so each request runs in a worker thread (`asyncio.to_thread`). ddgs 9
swallows its backends' errors and raises a plain `DDGSException("No results found.")` or
`TimeoutException` instead, so a rate limit looks like "no results": every ddgs exception is
retried with backoff, and searches are capped to one per `cfg.search_interval_s`. Past a
query's first page, "no results" is taken for what it says (the pages ran out): an empty
answer, which the policy learns from, rather than a failed search that would pause the crawl.
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Callable

import ddgs
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from explorer.config import CrawlConfig
from explorer.engines.base import SearchAttempt, Clock, RetryingEngine, Sleep

SAFESEARCH = ("on", "moderate", "off")
IMAGE_BACKENDS = ("bing", "duckduckgo")   # ddgs's image sources (ddgs/engines/*_images.py)


class DDGSEngine(RetryingEngine):
    """ddgs's `images()`. Pages are real (each backend's next page: Bing 35 results a page,
    DuckDuckGo 100); the backends a query may be asked on besides the configured one are
    ddgs's image sources (with `auto`, one of them often answers alone)."""

    name = "ddgs"
    pages = True

    def __init__(self, cfg: CrawlConfig, ddgs_factory: Callable[..., object] = ddgs.DDGS, *,
                 sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic,
                 rng: random.Random | None = None):
        if cfg.search_safesearch not in SAFESEARCH:
            raise ValueError(f"crawl.search_safesearch must be one of {', '.join(SAFESEARCH)}, "
                             f"not {cfg.search_safesearch!r}")
        super().__init__(cfg, min_interval_s=cfg.search_interval_s, sleep=sleep, clock=clock, rng=rng)
        self.ddgs_factory = ddgs_factory
        # ddgs's own per-request timeout; our deadline below covers the whole attempt.
        self.ddgs_timeout = max(1, math.ceil(cfg.search_timeout_s / 2))
        self.backends = tuple(b for b in IMAGE_BACKENDS if b != cfg.search_backend)

    def _images(self, query: str, max_results: int, page: int, backend: str) -> list:
        client = self.ddgs_factory(timeout=self.ddgs_timeout)
        return client.images(query, region=self.cfg.search_region,
                             safesearch=self.cfg.search_safesearch, max_results=max_results,
                             page=page, backend=backend or self.cfg.search_backend)

    async def attempt(self, query: str, max_results: int, page: int = 1, backend: str = "") -> SearchAttempt:
        try:
            rows = await asyncio.wait_for(
                asyncio.to_thread(self._images, query, max_results, page, backend),
                timeout=self.cfg.search_timeout_s)
        except asyncio.TimeoutError:
            # The worker thread cannot be cancelled; ddgs's own timeout ends it soon.
            return SearchAttempt(error=f"timeout: no answer in {self.cfg.search_timeout_s:g} s",
                           retryable=True)
        except RatelimitException as e:
            return SearchAttempt(error=f"rate limited: {e}", retryable=True)
        except TimeoutException as e:
            return SearchAttempt(error=f"timeout: {e}", retryable=True)
        except DDGSException as e:
            if "no results" in str(e).lower():
                if page > 1:   # past a query's last page: an answer, not an unavailable engine
                    return SearchAttempt(rows=[])
                return SearchAttempt(error="no results (ddgs also answers this when rate-limited)",
                               retryable=True)
            return SearchAttempt(error=f"ddgs error: {e}", retryable=True)
        if not isinstance(rows, list):
            return SearchAttempt(error=f"ddgs returned {type(rows).__name__}, not a list")
        return SearchAttempt(rows=rows)
