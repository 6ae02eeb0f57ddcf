"""Fetch image bytes from the web under guards (ARCHITECTURE.md, "Guards").

`Downloader.fetch(url)` never raises for what the web does, nor for what a URL list holds:
every failure is a FetchResult with a UrlOutcome and a reason. Redirects are followed by hand so
that every hop is checked (`netguard.guard_url` for the URL, `GuardedResolver` for DNS
answers). Each hop is parsed once, by yarl, and that `yarl.URL` is what both the guard judges
and aiohttp requests: the two cannot disagree on the host.
"""
from __future__ import annotations

import asyncio
import random
import time

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from explorer.crawl import netguard
from explorer.config import CrawlConfig
from explorer.records import FetchResult, UrlOutcome

REDIRECTS = (301, 302, 303, 307, 308)
ROBOTS_DIRECTIVES = ("noai", "noimageai")


def host_key(url: str | URL) -> str:
    """The host[:port] that per-host limits and politeness count. A URL without one, or that
    does not parse, is its own key: the guard refuses it before any request, so it should
    wait for nobody."""
    try:
        return netguard.parse_url(url).host_port_subcomponent or str(url)
    except (ValueError, IndexError):  # (yarl: IndexError for an empty host after user info, "file://user@")
        return str(url)


def join_location(base: URL, location: str) -> str | URL:
    """The URL a redirect's Location points to, joined by yarl as aiohttp would; the Location
    itself when yarl cannot parse it (the guard then records it as a bad URL)."""
    try:
        return base.join(netguard.parse_url(location))
    except ValueError:
        return location


class HostPacer:
    """Politeness: requests to one host start at least `delay_s` apart."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._next: dict[str, float] = {}  # host -> earliest start of its next request

    async def wait(self, host: str) -> None:
        if self.delay_s <= 0:
            return
        now = time.monotonic()
        if len(self._next) > 10_000:  # forget hosts whose pause is over: a long crawl meets millions
            self._next = {h: t for h, t in self._next.items() if t > now}
        at = max(now, self._next.get(host, 0.0))
        self._next[host] = at + self.delay_s
        if at > now:
            await asyncio.sleep(at - now)


class Downloader:
    """Many requests in flight, a per-host limit, and the guards. Use as `async with`.

    `resolver` asks DNS for the guard (the system resolver by default; tests pass one that
    never leaves the machine)."""

    def __init__(self, cfg: CrawlConfig, allow: list[str] | tuple[str, ...] = (),
                 resolver: AbstractResolver | None = None) -> None:
        self.cfg = cfg
        self.allow = netguard.normalise_allow([*cfg.allow, *allow])
        self.resolver = resolver
        self.session: aiohttp.ClientSession | None = None
        self.pacer = HostPacer(cfg.politeness_delay_s)

    async def __aenter__(self) -> "Downloader":
        connector = aiohttp.TCPConnector(
            limit=self.cfg.concurrency, limit_per_host=self.cfg.per_host,
            resolver=netguard.GuardedResolver(self.allow, self.resolver), ttl_dns_cache=60)
        timeout = aiohttp.ClientTimeout(total=self.cfg.total_timeout_s, sock_connect=self.cfg.connect_timeout_s,
                                        sock_read=self.cfg.read_timeout_s)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers={"User-Agent": self.cfg.user_agent},
            trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    async def fetch(self, url: str) -> FetchResult:
        """GET `url` (following up to max_redirects checked hops, retrying 429/5xx) -> FetchResult."""
        start = time.monotonic()
        result = FetchResult(url=url)
        for attempt in range(self.cfg.retries + 1):
            result = await self._follow(url)
            retryable = result.outcome == UrlOutcome.HTTP_ERROR and (result.status == 429 or result.status >= 500)
            if not retryable or attempt == self.cfg.retries:
                break
            await asyncio.sleep(self.cfg.retry_backoff_s * 2 ** attempt * (0.5 + random.random()))
        result.elapsed_s = time.monotonic() - start
        return result

    async def _follow(self, url: str) -> FetchResult:
        seen: set[str] = set()
        current: str | URL = url
        for hop in range(self.cfg.max_redirects + 1):
            target, problem = netguard.guard_url(current, self.allow)
            if problem is not None:
                outcome = UrlOutcome.FORBIDDEN_ADDRESS if problem.forbidden else UrlOutcome.BAD_URL
                return FetchResult(url=url, outcome=outcome, reason=problem.reason, final_url=str(current),
                                   redirects=hop)
            seen.add(str(target))
            result, location = await self._get(url, target)
            result.redirects = hop
            if location is None:
                return result
            nxt = join_location(target, location)
            if str(nxt) in seen:
                return FetchResult(url=url, outcome=UrlOutcome.REDIRECT_LIMIT, reason=f"redirect loop at {nxt}",
                                   status=result.status, final_url=str(target), redirects=hop + 1)
            current = nxt
        return FetchResult(url=url, outcome=UrlOutcome.REDIRECT_LIMIT, final_url=str(current), redirects=hop + 1,
                           reason=f"more than {self.cfg.max_redirects} redirects")

    async def _get(self, url: str, target: URL) -> tuple[FetchResult, str | None]:
        """One request to the guarded `target`, no redirects: (result, Location to follow or None)."""
        assert self.session is not None, "use `async with Downloader(...)`"
        current = str(target)
        fail = lambda outcome, reason, status=0: (  # noqa: E731
            FetchResult(url=url, outcome=outcome, reason=reason, status=status, final_url=current), None)
        await self.pacer.wait(host_key(target))
        try:
            async with self.session.get(target, allow_redirects=False) as resp:
                status = resp.status
                if status in REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        return fail(UrlOutcome.HTTP_ERROR, f"{status} without Location", status)
                    return FetchResult(url=url, status=status, final_url=current), location
                if status != 200:
                    return fail(UrlOutcome.HTTP_ERROR, f"HTTP {status}", status)
                robots = ",".join(resp.headers.getall("X-Robots-Tag", [])).lower()
                if any(d in robots.replace(":", ",").replace(" ", ",").split(",") for d in ROBOTS_DIRECTIVES):
                    return fail(UrlOutcome.ROBOTS, f"X-Robots-Tag: {robots[:100]}", status)
                if resp.content_length is not None and resp.content_length > self.cfg.max_bytes:
                    return fail(UrlOutcome.TOO_LARGE, f"Content-Length {resp.content_length} > {self.cfg.max_bytes}", status)
                if resp.content_length is not None and "Content-Encoding" not in resp.headers:
                    body = await resp.read()  # length known and under the cap: the parser stops there
                else:
                    body = await self._read_capped(resp)
                if body is None:
                    return fail(UrlOutcome.TOO_LARGE, f"body over {self.cfg.max_bytes} bytes", status)
                return FetchResult(url=url, body=body, status=status, final_url=current), None
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, netguard.ForbiddenAddress):
                return fail(UrlOutcome.FORBIDDEN_ADDRESS, str(e.os_error))
            return fail(UrlOutcome.CONNECTION_ERROR, f"{type(e).__name__}: {e}"[:300])
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            return fail(UrlOutcome.TIMEOUT, f"{type(e).__name__}: {e}"[:300] or "timeout")
        except aiohttp.InvalidURL as e:
            return fail(UrlOutcome.BAD_URL, f"invalid URL: {e}"[:300])
        except (aiohttp.ClientError, OSError, ValueError) as e:
            # payload errors (truncated, bad gzip), disconnections, malformed responses
            return fail(UrlOutcome.CONNECTION_ERROR, f"{type(e).__name__}: {e}"[:300])

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The (decompressed) body, or None as soon as it passes max_bytes."""
        chunks, size = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.cfg.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

