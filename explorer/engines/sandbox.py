"""The sandbox web's search endpoint, over HTTP like any engine (explorer/sandbox/server.py).

`GET {base_url}/search?q=QUERY&max_results=N&page=P` answers a JSON list of dicts with the ddgs keys.
429 and 202 mean "rate limited" (202 is how DuckDuckGo says it), 5xx and timeouts are retried
with backoff; other statuses and bodies that are not a JSON list are errors.
"""
from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp

from explorer.config import CrawlConfig
from explorer.engines.base import SearchAttempt, Clock, RetryingEngine, Sleep

MAX_BODY_BYTES = 8_000_000        # a search answer is a few kB; more is a broken server
RATE_LIMIT_STATUSES = (429, 202)


class SandboxEngine(RetryingEngine):
    name = "sandbox"
    pages = True

    def __init__(self, base_url: str, cfg: CrawlConfig, *, min_interval_s: float = 0.0,
                 sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic,
                 rng: random.Random | None = None):
        # No rate cap by default: the sandbox is local, and its 429s are handled by backoff.
        super().__init__(cfg, min_interval_s=min_interval_s, sleep=sleep, clock=clock, rng=rng)
        self.search_url = base_url.rstrip("/") + "/search"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.cfg.search_timeout_s,
                                            connect=self.cfg.connect_timeout_s)
            self._session = aiohttp.ClientSession(
                timeout=timeout, headers={"User-Agent": self.cfg.user_agent}, trust_env=False)
        return self._session

    async def attempt(self, query: str, max_results: int, page: int = 1, backend: str = "") -> SearchAttempt:
        params = {"q": query, "max_results": str(max_results), "page": str(page)}
        try:
            async with self._client().get(self.search_url, params=params,
                                          allow_redirects=False) as resp:
                if resp.status in RATE_LIMIT_STATUSES:
                    return SearchAttempt(error=f"rate limited: HTTP {resp.status}", retryable=True)
                if resp.status >= 500:
                    return SearchAttempt(error=f"HTTP {resp.status}", retryable=True)
                if resp.status != 200:
                    return SearchAttempt(error=f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        return SearchAttempt(error=f"answer over {MAX_BODY_BYTES} bytes")
        except asyncio.TimeoutError:
            return SearchAttempt(error=f"timeout after {self.cfg.search_timeout_s:g} s", retryable=True)
        except aiohttp.ClientError as e:
            return SearchAttempt(error=f"connection error: {type(e).__name__}: {e}", retryable=True)
        try:
            rows = json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return SearchAttempt(error=f"bad JSON: {e}")
        if not isinstance(rows, list):
            return SearchAttempt(error=f"bad JSON: expected a list, got {type(rows).__name__}")
        return SearchAttempt(rows=rows)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
