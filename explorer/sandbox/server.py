"""The sandbox web over HTTP: an aiohttp image search engine on loopback, with faults.

Routes (on the main listener, 127.0.0.1 by default):
    GET /search?q=...&max_results=N&page=P
                                      JSON list of ddgs-style results
                                      {title, image, thumbnail, url, height, width, source};
                                      page P (default 1, at most 1000) of the query's ranked
                                      list; with sandbox.page_size an answer holds at most that
                                      many, and later pages are less on-topic (sandbox/search.py)
    GET /img/<id>.<ext>               the image (jpg, png or webp), or its fault
    GET /thumb/<id>.jpg               a small JPEG of the image (never faulty)
    GET /page/<id>.html               the page an image "comes from"
    GET /loop/<id>/<n>                the redirect loop's hops
    GET /stats                        counts of requests, faults served, forbidden hits

Forbidden listeners (127.0.0.2 and, where available, [::1]) answer anything with a small image
and count the hits: a crawler that honours its allow-list never reaches them.

`start_sandbox(...)` runs it all in a background thread (tests, the demo); `serve(...)` runs it
in the foreground (`explore sandbox serve`).
"""
from __future__ import annotations

import asyncio
import functools
import gzip
import html
import ipaddress
import struct
import threading
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from explorer.config import SandboxConfig
from explorer.sandbox import faults
from explorer.sandbox.search import MAX_PAGE, SearchIndex
from explorer.sandbox.world import World, encode_image

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>" \
            b"<p>Please enable JavaScript and cookies to continue.</p></body></html>"
BOMB_SIDE = 30000


@dataclass
class Stats:
    requests: Counter = field(default_factory=Counter)        # by route
    faults: Counter = field(default_factory=Counter)          # by fault kind, each time served
    forbidden_hits: Counter = field(default_factory=Counter)  # by forbidden host
    images_served: int = 0                                    # good image bodies sent

    def snapshot(self) -> dict:
        return {"requests": dict(self.requests), "faults": dict(self.faults),
                "forbidden_hits": dict(self.forbidden_hits), "images_served": self.images_served,
                "total_requests": sum(self.requests.values())}


@functools.cache
def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels, about 110 KB (all black)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.compress(row * (side % 1000)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@functools.cache
def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b"\xff\xd8\xff" + b"\x00" * (inflated - 3), compresslevel=9)


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class Sandbox:
    """The sandbox web's state and handlers; `start` binds its listeners on the running loop."""

    def __init__(self, options: SandboxConfig):
        faults.check_profile(options.profile)
        for host in (options.host, *options.forbidden_hosts):
            if not is_loopback(host):
                raise ValueError(f"the sandbox web listens on loopback addresses only, not {host!r}")
        self.options = options
        self.world = World(options.seed, test_per_class=options.test_per_class, looks=options.looks)
        self.index = SearchIndex(self.world, page_size=options.page_size, page_decay=options.page_decay,
                                 named_titles=options.named_titles)
        self.stats = Stats()
        self._search_attempts: Counter = Counter()
        self._searches = 0   # every search request answered, for the outage profiles
        self._images: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cached_bytes = 0
        self._runners: list[web.AppRunner] = []
        self.forbidden: dict[str, int] = {}   # host -> port of each forbidden listener
        self.url = ""
        self.host_port = ""
        self._stopping: asyncio.Event | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.add_routes([
            web.get("/search", self.search), web.get("/img/{name}", self.image),
            web.get("/thumb/{name}", self.thumb), web.get("/page/{name}", self.page),
            web.get("/loop/{image_id}/{hop}", self.loop_hop), web.get("/stats", self.get_stats),
        ])
        port = await self._listen(app, self.options.host, self.options.port)
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        self.host_port = f"{host}:{port}"
        self.url = f"http://{self.host_port}"
        for fhost in self.options.forbidden_hosts:
            if fhost == self.options.host:
                continue
            fapp = web.Application()
            fapp.router.add_route("*", "/{tail:.*}", functools.partial(self.forbidden_hit, fhost))
            try:  # the same port number as the main listener when free: only the address differs
                self.forbidden[fhost] = await self._listen(fapp, fhost, port)
            except OSError:
                try:
                    self.forbidden[fhost] = await self._listen(fapp, fhost, 0)
                except OSError:  # no such loopback address here (e.g. IPv6 disabled): skip it
                    pass
        return self.url

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=2048)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        return runner.addresses[0][1]

    async def close(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    # ---- search -----------------------------------------------------------------------------

    async def search(self, request: web.Request) -> web.Response:
        self.stats.requests["search"] += 1
        query = request.query.get("q", "")
        try:
            max_results = int(request.query.get("max_results", "50"))
        except ValueError:
            return web.json_response({"error": "max_results must be an integer"}, status=400)
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            return web.json_response({"error": "page must be an integer"}, status=400)
        if not 1 <= page <= MAX_PAGE:
            return web.json_response({"error": f"page must be between 1 and {MAX_PAGE}"}, status=400)
        key = f"{query}\x1f{max_results}" + (f"\x1f{page}" if page > 1 else "")  # page 1: its faults as before pages
        attempt = self._search_attempts[key]
        self._search_attempts[key] += 1
        fault = faults.search_outage(self.options.seed, self.options.profile, self._searches) \
            or faults.search_fault(self.options.seed, self.options.profile, key, attempt)
        self._searches += 1
        if fault == "http_429":
            self.stats.faults[fault] += 1
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "1"})
        if fault == "http_202":  # DuckDuckGo's way of saying "slow down"
            self.stats.faults[fault] += 1
            return web.Response(status=202, text="")
        if fault == "http_503":
            self.stats.faults[fault] += 1
            return web.Response(status=503, text="Service Unavailable")
        base = f"http://{request.host}"
        results = []
        for hit in self.index.search(query, max_results, page):
            info = self.world.image_info(hit.image_id)
            results.append({
                "title": hit.title,
                "image": f"{base}/img/{hit.image_id}.{info.ext}",
                "thumbnail": f"{base}/thumb/{hit.image_id}.jpg",
                "url": f"{base}/page/{hit.image_id}.html",
                "height": info.height, "width": info.width, "source": "sandbox",
            })
        return web.json_response(results)

    # ---- images -----------------------------------------------------------------------------

    async def _image_bytes(self, image_id: str, ext: str, thumb: bool = False) -> bytes:
        key = (image_id, "thumb" if thumb else ext)
        data = self._images.get(key)
        if data is None:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(None, self._encode, image_id, ext, thumb)
            if key not in self._images:
                self._images[key] = data
                self._cached_bytes += len(data)
            while self._cached_bytes > self.options.cache_bytes:
                self._cached_bytes -= len(self._images.popitem(last=False)[1])
        else:
            self._images.move_to_end(key)
        return data

    def _encode(self, image_id: str, ext: str, thumb: bool) -> bytes:
        if not thumb:
            return self.world.encode(image_id, ext)
        img = self.world.render(image_id)
        img.thumbnail((128, 128))
        return encode_image(img, "jpg", 75)

    def _parse(self, name: str) -> tuple[str, str] | None:
        image_id, _, ext = name.rpartition(".")
        ext = "jpg" if ext == "jpeg" else ext
        if ext not in CONTENT_TYPES or self.world.image_info(image_id) is None:
            return None
        return image_id, ext

    async def image(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests["img"] += 1
        parsed = self._parse(request.match_info["name"])
        if parsed is None:
            return web.Response(status=404, text="no such image")
        image_id, ext = parsed
        fault = None if request.query.get("ok") == "1" else \
            faults.image_fault(self.options.seed, self.options.profile, request.path)
        if fault is None:
            return await self._good_image(image_id, ext)
        self.stats.faults[fault] += 1
        return await getattr(self, f"_fault_{fault}")(request, image_id, ext)

    async def _good_image(self, image_id: str, ext: str, headers: dict | None = None,
                          content_type: str | None = None) -> web.Response:
        body = await self._image_bytes(image_id, ext)
        self.stats.images_served += 1
        return web.Response(body=body, content_type=content_type or CONTENT_TYPES[ext], headers=headers)

    async def thumb(self, request: web.Request) -> web.Response:
        self.stats.requests["thumb"] += 1
        parsed = self._parse(request.match_info["name"])
        if parsed is None:
            return web.Response(status=404, text="no such image")
        return web.Response(body=await self._image_bytes(parsed[0], "jpg", thumb=True), content_type="image/jpeg")

    async def page(self, request: web.Request) -> web.Response:
        self.stats.requests["page"] += 1
        image_id = request.match_info["name"].removesuffix(".html")
        info = self.world.image_info(image_id)
        if info is None:
            return web.Response(status=404, text="no such page")
        title = html.escape(self.index.title(image_id))
        page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>" \
               f"<img src=\"/img/{image_id}.{info.ext}\"></body></html>"
        return web.Response(text=page, content_type="text/html")

    async def loop_hop(self, request: web.Request) -> web.Response:
        self.stats.requests["loop"] += 1
        hop = 1 - int(request.match_info["hop"] == "1")
        raise web.HTTPFound(f"/loop/{request.match_info['image_id']}/{hop}")

    async def forbidden_hit(self, host: str, request: web.Request) -> web.Response:
        self.stats.forbidden_hits[host] += 1
        return web.Response(body=encode_image(self.world.render("c0v0"), "jpg"), content_type="image/jpeg")

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    # ---- one handler per fault kind ---------------------------------------------------------

    async def _fault_http_404(self, request, image_id, ext):
        return web.Response(status=404, text="Not Found")

    async def _fault_http_500(self, request, image_id, ext):
        return web.Response(status=500, text="Internal Server Error")

    async def _silence(self) -> None:
        """Wait stall_s, or until the server stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), self.options.stall_s)
        except asyncio.TimeoutError:
            pass

    async def _fault_stall(self, request, image_id, ext):
        body = await self._image_bytes(image_id, ext)
        if faults.variant(self.options.seed, request.path, 2) == 0:  # silent before the headers
            await self._silence()
            return web.Response(body=body, content_type=CONTENT_TYPES[ext])
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[ext]})  # ... or mid-body
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            await resp.write(body[:64])
            await self._silence()
            await resp.write(body[64:])
        except ConnectionError:
            pass
        return resp

    async def _fault_truncated(self, request, image_id, ext):
        body = await self._image_bytes(image_id, ext)
        if faults.variant(self.options.seed, request.path, 2) == 0:  # a whole response of half a file
            return web.Response(body=body[:len(body) // 2], content_type=CONTENT_TYPES[ext])
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[ext]})
        resp.content_length = len(body)
        resp.force_close()
        await resp.prepare(request)
        try:
            await resp.write(body[:len(body) // 2])
        except ConnectionError:
            pass
        return resp

    async def _fault_wrong_content_type(self, request, image_id, ext):
        return await self._good_image(image_id, ext, content_type="text/html")

    async def _fault_html_as_image(self, request, image_id, ext):
        return web.Response(body=HTML_PAGE, content_type=CONTENT_TYPES[ext])

    async def _fault_bomb(self, request, image_id, ext):
        body = await asyncio.get_running_loop().run_in_executor(None, bomb_png)
        return web.Response(body=body, content_type=CONTENT_TYPES[ext])

    async def _oversize(self, request, chunked: bool):
        n = self.options.oversize_bytes
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = n
        await resp.prepare(request)
        block = b"\xff\xd8\xff\xe0" + bytes(65532)
        try:
            sent = 0
            while sent < n:
                part = block[:min(len(block), n - sent)]
                await resp.write(part)
                sent += len(part)
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    async def _fault_oversize(self, request, image_id, ext):
        return await self._oversize(request, chunked=False)

    async def _fault_oversize_chunked(self, request, image_id, ext):
        return await self._oversize(request, chunked=True)

    async def _fault_gzip_bomb(self, request, image_id, ext):
        body = await asyncio.get_running_loop().run_in_executor(None, gzip_bomb, self.options.gzip_bomb_bytes)
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"})

    async def _fault_redirect_loop(self, request, image_id, ext):
        raise web.HTTPFound(f"/loop/{image_id}/0")

    async def _fault_redirect_forbidden(self, request, image_id, ext):
        if not self.forbidden:  # no forbidden listener could bind: a plain 404 instead
            return web.Response(status=404, text="Not Found")
        targets = [(host, host) for host in sorted(self.forbidden)]
        targets += [(f"::ffff:{host}", host) for host in sorted(self.forbidden) if ":" not in host]
        shown, host = targets[faults.variant(self.options.seed, request.path, len(targets))]
        netloc = f"[{shown}]" if ":" in shown else shown
        raise web.HTTPFound(f"http://{netloc}:{self.forbidden[host]}/img/{image_id}.{ext}")

    async def _fault_redirect_ok(self, request, image_id, ext):
        raise web.HTTPFound(f"/img/{image_id}.{ext}?ok=1")

    async def _fault_x_robots(self, request, image_id, ext):
        tag = ("noai", "noimageai")[faults.variant(self.options.seed, request.path, 2)]
        return await self._good_image(image_id, ext, headers={"X-Robots-Tag": tag})


class SandboxServer:
    """The sandbox web running in a background thread with its own event loop.

    Use as a context manager, or call `.stop()`. `.url` is the base URL, `.host_port` the
    "127.0.0.1:PORT" to put on a crawler's allow-list, `.world` the world it serves."""

    def __init__(self, options: SandboxConfig):
        self.sandbox = Sandbox(options)
        self.world = self.sandbox.world
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox-web", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.sandbox.start())
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.sandbox.close())
        self._loop.close()

    def start(self, timeout: float = 10.0) -> "SandboxServer":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("sandbox web did not start in time")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def host_port(self) -> str:
        return self.sandbox.host_port

    @property
    def forbidden(self) -> dict[str, int]:
        return dict(self.sandbox.forbidden)

    def stats(self) -> dict:
        """A snapshot of the counters, taken on the server's own loop."""
        async def snap():
            return self.sandbox.stats.snapshot()
        return asyncio.run_coroutine_threadsafe(snap(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> "SandboxServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_sandbox(seed: int = 0, profile: str = "none", host: str = "127.0.0.1", port: int = 0,
                  **options) -> SandboxServer:
    """Start the sandbox web in a background thread; returns once it listens."""
    return SandboxServer(SandboxConfig(seed=seed, profile=profile, host=host, port=port, **options)).start()


async def serve(options: SandboxConfig, on_ready=None) -> None:
    """Run the sandbox web on the current loop until cancelled (Ctrl-C)."""
    sandbox = Sandbox(options)
    await sandbox.start()
    if on_ready is not None:
        on_ready(sandbox)
    try:
        await asyncio.Event().wait()
    finally:
        await sandbox.close()
