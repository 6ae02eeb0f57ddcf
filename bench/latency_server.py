"""A loopback web with the web's latency: many hosts, slow first bytes, thin pipes, a few stalls.

For bench/crawl.py --latency, where throughput is set by how many requests a crawler keeps in
flight, its per-host limits and its timeouts, not by its CPU. One process serves the same image
files (from memory) on several virtual hosts, each a distinct loopback address (127.H.0.1, one
port for all). Per request, drawn from the URL's path and the seed (so both crawlers meet the same
delays on the same URL, whatever their order):
- the time to first byte: lognormal (median `ttfb_median_s`, log-spread `ttfb_sigma`), clipped
  to [`ttfb_min_s`, `ttfb_max_s`] (50 ms - 3 s by default);
- the body then streams at `bandwidth_Bps` per connection, in `chunk_s` slices;
- a `stall_share` of the URLs stall for `stall_s` (longer than the crawlers' timeouts): half
  before any byte, half after the headers and a first slice of the body.
A path that names no file answers 404 after its delay. `/stats`: requests per host, and the
requests in flight (now, and their integral over time: its growth over a crawler's run divided by
the run's seconds is how many that crawler kept in flight on average).
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class LatencyProfile:
    hosts: int = 16
    ttfb_median_s: float = 0.3
    ttfb_sigma: float = 1.0          # of log(ttfb): ~5% of the draws reach the 3 s cap
    ttfb_min_s: float = 0.05
    ttfb_max_s: float = 3.0
    bandwidth_Bps: float = 400_000   # per connection
    chunk_s: float = 0.1             # the body is written in slices of this much time
    stall_share: float = 0.01
    stall_s: float = 30.0
    seed: int = 0


def host_addresses(n: int) -> list[str]:
    """n distinct loopback addresses, one per virtual host: 127.1.0.1, 127.2.0.1, ..."""
    if not 1 <= n <= 254:
        raise ValueError("between 1 and 254 hosts")
    return [f"127.{i}.0.1" for i in range(1, n + 1)]


def _uniform(key: str, seed: int, salt: str) -> float:
    """A number in (0, 1) drawn from the key: the same for every request of it."""
    digest = hashlib.blake2b(f"{seed}:{salt}:{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0 ** 64


def ttfb_s(path: str, profile: LatencyProfile) -> float:
    """The time to first byte of `path`: lognormal, clipped."""
    u1, u2 = _uniform(path, profile.seed, "a"), _uniform(path, profile.seed, "b")
    z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller
    return min(profile.ttfb_max_s, max(profile.ttfb_min_s, profile.ttfb_median_s * math.exp(profile.ttfb_sigma * z)))


def stall(path: str, profile: LatencyProfile) -> str | None:
    """None, or where `path` stalls: "before" any byte, or "body" (after headers and a slice)."""
    u = _uniform(path, profile.seed, "stall")
    if u >= profile.stall_share:
        return None
    return "before" if u < profile.stall_share / 2 else "body"


def make_app(bodies: dict[str, bytes], profile: LatencyProfile):
    """The aiohttp application: GET /{name} as the profile says, GET /stats."""
    from aiohttp import web

    served: Counter = Counter()
    gauge = {"in_flight": 0, "area": 0.0, "at": time.monotonic()}  # area: in-flight requests x seconds
    slice_bytes = max(1024, int(profile.bandwidth_Bps * profile.chunk_s))

    def count(change: int) -> None:
        now = time.monotonic()
        gauge["area"] += gauge["in_flight"] * (now - gauge["at"])
        gauge["in_flight"] += change
        gauge["at"] = now

    async def image(request):
        served[request.host] += 1
        count(+1)
        try:
            return await answer(request)
        finally:
            count(-1)

    async def answer(request):
        name = request.match_info["name"]
        where = stall(request.path, profile)
        if where == "before":
            await asyncio.sleep(profile.stall_s)
            return web.Response(status=504)
        await asyncio.sleep(ttfb_s(request.path, profile))
        body = bodies.get(name)
        if body is None:
            return web.Response(status=404)
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES.get(name.rpartition(".")[2],
                                                                             "application/octet-stream")})
        resp.content_length = len(body)
        await resp.prepare(request)
        for start in range(0, len(body), slice_bytes):
            piece = body[start:start + slice_bytes]
            await resp.write(piece)
            if where == "body":
                await asyncio.sleep(profile.stall_s)
                break
            await asyncio.sleep(len(piece) / profile.bandwidth_Bps)
        await resp.write_eof()
        return resp

    async def stats(request):
        count(0)
        return web.json_response({"served": dict(served), "in_flight": gauge["in_flight"],
                                  "in_flight_seconds": gauge["area"]})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/{name}", image)
    return app


async def start_sites(app, addresses: list[str], port: int = 0):
    """Serve `app` on every address, one port for all -> (runner, port)."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    for addr in addresses:
        site = web.TCPSite(runner, addr, port, backlog=1024)
        await site.start()
        port = port or site._server.sockets[0].getsockname()[1]
    return runner, port


def serve(files_dir: str, profile: LatencyProfile, ready) -> None:
    """A server process's whole life: the files in memory, every host up, the port sent on
    `ready` (a Pipe end), then serve until terminated."""
    bodies = {p.name: p.read_bytes() for p in Path(files_dir).iterdir() if p.suffix[1:] in CONTENT_TYPES}
    loop = asyncio.new_event_loop()
    _, port = loop.run_until_complete(start_sites(make_app(bodies, profile), host_addresses(profile.hosts)))
    ready.send(port)
    loop.run_forever()
