"""The downloader against loopback servers only (127.0.0.0/8 and ::1)."""
import asyncio
import gzip
import ipaddress
import socket

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.config import CrawlConfig
from explorer.crawl.downloader import Downloader, host_key
from explorer.records import UrlOutcome
from tests.crawl_fixtures import CountingListener, can_bind, image_app, jpeg_bytes, serve

JPEG = jpeg_bytes(64, 48)


def cfg(**kw) -> CrawlConfig:
    base = dict(connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=10.0, retries=2, retry_backoff_s=0.01,
                max_bytes=200_000)
    return CrawlConfig(**(base | kw))


def fetch(url: str, allow: list[str], **kw):
    async def go():
        async with Downloader(cfg(**kw), allow) as d:
            return await d.fetch(url)
    return asyncio.run(go())


def redirect_app(target: str) -> tuple[web.Application, dict]:
    hits = {"n": 0}

    async def handler(request):
        hits["n"] += 1
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_get("/r", handler)
    return app, hits


def test_fetches_an_allowed_server_with_our_user_agent():
    seen = {}

    async def handler(request):
        seen["ua"] = request.headers.get("User-Agent")
        return web.Response(body=JPEG, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/a.jpg", handler)
    with serve(app) as port:
        r = fetch(f"http://127.0.0.1:{port}/a.jpg", [f"127.0.0.1:{port}"])
    assert r.outcome is None and r.body == JPEG and r.status == 200
    assert seen["ua"] == CrawlConfig().user_agent


def test_a_local_server_off_the_allow_list_is_never_contacted():
    app, hits = image_app({"/a.jpg": (JPEG, {})})
    with serve(app) as port:
        r = fetch(f"http://127.0.0.1:{port}/a.jpg", [f"127.0.0.1:{port + 1}"])
        r2 = fetch(f"http://localhost:{port}/a.jpg", [])
    assert r.outcome == r2.outcome == UrlOutcome.FORBIDDEN_ADDRESS
    assert hits == {}


def test_an_allow_listed_name_is_resolved_and_fetched():
    app, hits = image_app({"/a.jpg": (JPEG, {})})
    with serve(app) as port:
        r = fetch(f"http://localhost:{port}/a.jpg", [f"localhost:{port}"])
    assert r.body == JPEG, r.reason


def _redirect_to_listener(host: str, family=socket.AF_INET):
    if not can_bind(host, family):
        pytest.skip(f"cannot bind {host}")
    listener = CountingListener(host)
    with listener.running() as lport:
        shown = f"[{host}]" if ":" in host else host
        app, hits = redirect_app(f"http://{shown}:{lport}/secret")
        with serve(app) as port:
            r = fetch(f"http://127.0.0.1:{port}/r", [f"127.0.0.1:{port}"])
    assert hits["n"] == 1
    assert r.outcome == UrlOutcome.FORBIDDEN_ADDRESS, r
    assert listener.connections == 0


def test_redirect_to_another_loopback_address_is_refused_before_connecting():
    _redirect_to_listener("127.0.0.2")


def test_redirect_to_ipv6_loopback_is_refused_before_connecting():
    _redirect_to_listener("::1", socket.AF_INET6)


def test_redirect_to_another_port_on_the_allowed_host_is_refused():
    _redirect_to_listener("127.0.0.1")


def test_redirect_to_a_local_name_is_refused():
    listener = CountingListener("127.0.0.1")
    with listener.running() as lport:
        app, _ = redirect_app(f"http://localhost:{lport}/x")
        with serve(app) as port:
            r = fetch(f"http://127.0.0.1:{port}/r", [f"127.0.0.1:{port}"])
    assert r.outcome == UrlOutcome.FORBIDDEN_ADDRESS and listener.connections == 0


def test_redirects_are_followed_within_the_limit_and_loops_stop():
    async def hop(request):
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=JPEG)
        raise web.HTTPFound(f"/hop/{n - 1}")

    async def loop(request):
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/loop", loop)
    with serve(app) as port:
        allow = [f"127.0.0.1:{port}"]
        ok = fetch(f"http://127.0.0.1:{port}/hop/5", allow)
        too_many = fetch(f"http://127.0.0.1:{port}/hop/6", allow)
        looped = fetch(f"http://127.0.0.1:{port}/loop", allow)
    assert ok.body == JPEG and ok.redirects == 5
    assert too_many.outcome == UrlOutcome.REDIRECT_LIMIT
    assert looped.outcome == UrlOutcome.REDIRECT_LIMIT


def test_byte_cap_with_and_without_content_length_and_for_gzip():
    big = b"\xff\xd8\xff" + b"x" * 300_000

    async def declared(request):
        return web.Response(body=big)

    async def streamed(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 50_000):
            await resp.write(big[i:i + 50_000])
        await resp.write_eof()
        return resp

    bomb = gzip.compress(b"\0" * 5_000_000)

    async def gzipped(request):
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "image/jpeg"})

    app = web.Application()
    app.router.add_get("/declared", declared)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/gzip", gzipped)
    with serve(app) as port:
        allow = [f"127.0.0.1:{port}"]
        results = {p: fetch(f"http://127.0.0.1:{port}/{p}", allow) for p in ("declared", "streamed", "gzip")}
    assert len(bomb) < 200_000
    for name, r in results.items():
        assert r.outcome == UrlOutcome.TOO_LARGE, (name, r.reason)
    assert "Content-Length" in results["declared"].reason
    assert "Content-Length" not in results["streamed"].reason


@pytest.mark.parametrize("tag", ["noai", "googlebot: noimageai", "noindex, noai"])
def test_x_robots_tag_noai_is_honoured(tag):
    app, _ = image_app({"/a.jpg": (JPEG, {"X-Robots-Tag": tag})})
    with serve(app) as port:
        r = fetch(f"http://127.0.0.1:{port}/a.jpg", [f"127.0.0.1:{port}"])
    assert r.outcome == UrlOutcome.ROBOTS


def test_retries_only_for_429_and_5xx():
    calls = {"404": 0, "503": 0, "429": 0}

    async def status(request):
        code = request.match_info["code"]
        calls[code] += 1
        if code == "429" and calls[code] == 2:
            return web.Response(body=JPEG)
        return web.Response(status=int(code))

    app = web.Application()
    app.router.add_get("/s/{code}", status)
    with serve(app) as port:
        allow = [f"127.0.0.1:{port}"]
        r404, r503, r429 = (fetch(f"http://127.0.0.1:{port}/s/{c}", allow) for c in ("404", "503", "429"))
    assert r404.outcome == UrlOutcome.HTTP_ERROR and r404.status == 404 and calls["404"] == 1
    assert r503.outcome == UrlOutcome.HTTP_ERROR and calls["503"] == 3
    assert r429.body == JPEG and calls["429"] == 2


def test_a_stalled_server_times_out_and_a_closed_port_is_a_connection_error():
    async def stall(request):
        await asyncio.Event().wait()  # never answers; the client's read timeout ends it

    app = web.Application()
    app.router.add_get("/stall", stall)
    with serve(app) as port:
        r = fetch(f"http://127.0.0.1:{port}/stall", [f"127.0.0.1:{port}"], read_timeout_s=0.3)
    assert r.outcome == UrlOutcome.TIMEOUT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    r = fetch(f"http://127.0.0.1:{free}/x", [f"127.0.0.1:{free}"])
    assert r.outcome == UrlOutcome.CONNECTION_ERROR


def test_per_host_limit_holds():
    state = {"now": 0, "max": 0}

    async def slow(request):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.05)  # simulated latency, so requests overlap
        state["now"] -= 1
        return web.Response(body=JPEG)

    app = web.Application()
    app.router.add_get("/{n}", slow)

    async def go(port):
        async with Downloader(cfg(per_host=2), [f"127.0.0.1:{port}"]) as d:
            return await asyncio.gather(*(d.fetch(f"http://127.0.0.1:{port}/{i}") for i in range(8)))

    with serve(app) as port:
        results = asyncio.run(go(port))
    assert all(r.body == JPEG for r in results)
    assert state["max"] == 2


def test_politeness_delay_spaces_requests_to_one_host():
    times = []

    async def stamp(request):
        times.append(asyncio.get_running_loop().time())
        return web.Response(body=JPEG)

    app = web.Application()
    app.router.add_get("/{n}", stamp)

    async def go(port):
        async with Downloader(cfg(politeness_delay_s=0.2), [f"127.0.0.1:{port}"]) as d:
            return await asyncio.gather(*(d.fetch(f"http://127.0.0.1:{port}/{i}") for i in range(3)))

    with serve(app) as port:
        results = asyncio.run(go(port))
    assert all(r.body == JPEG for r in results)
    gaps = sorted(b - a for a, b in zip(sorted(times), sorted(times)[1:]))
    # (stamped where they arrive: a busy machine can delay one arrival and so shorten a gap by some
    # tens of ms; a delay of 0.2 s keeps the check about the spacing, not that jitter)
    assert gaps[0] >= 0.12


# -- hosts the URL parser folds into IP literals -------------------------------------------------
def fullwidth(text: str) -> str:
    """Digits and full stops as fullwidth digits and ideographic full stops (UTS46 folds them back)."""
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() else "\u3002" if c == "." else c for c in text)


def bold(text: str) -> str:
    """Digits as mathematical bold digits, full stops as halfwidth ideographic ones."""
    return "".join(chr(0x1D7CE + int(c)) if c.isdigit() else "\uff61" if c == "." else c for c in text)


SPELLINGS = {  # (address a server listens on, its port) -> how a URL list or a Location writes it
    "fullwidth": ("127.0.0.2", lambda host, port: f"{fullwidth(host)}:{port}"),
    "fullwidth port": ("127.0.0.1", lambda host, port: f"{fullwidth(host)}:{fullwidth(str(port))}"),
    "bold": ("127.0.0.2", lambda host, port: f"{bold(host)}:{port}"),
    "decimal": ("127.0.0.2", lambda host, port: f"{int(ipaddress.IPv4Address(host))}:{port}"),
    "short": ("127.0.0.2", lambda host, port: f"127.2:{port}"),
    "ipv6 fullwidth port": ("::1", lambda host, port: f"[{host}]:{fullwidth(str(port))}"),
}


def raw_redirect_app(location: str) -> tuple[web.Application, dict]:
    """Redirects with `location` sent as written (web.HTTPFound would normalise it first)."""
    hits = {"n": 0}

    async def handler(request):
        hits["n"] += 1
        return web.Response(status=302, headers={"Location": location})

    app = web.Application()
    app.router.add_get("/r", handler)
    return app, hits


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_folded_spelling_of_a_local_address_is_never_requested(spelling):
    """A server off the allow-list that answers with an image (as the sandbox's forbidden
    listeners do): neither the URL itself nor a redirect from the allowed server reaches it."""
    host, spell = SPELLINGS[spelling]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not can_bind(host, family):
        pytest.skip(f"cannot bind {host}")
    forbidden_app, forbidden_hits = image_app({"/a.jpg": (JPEG, {})})
    with serve(forbidden_app, host) as fport:
        spelled = f"http://{spell(host, fport)}/a.jpg"
        app, hits = raw_redirect_app(spelled)
        with serve(app) as port:
            allow = [f"127.0.0.1:{port}"]
            direct = fetch(spelled, allow)
            redirected = fetch(f"http://127.0.0.1:{port}/r", allow)
    assert hits["n"] == 1
    assert direct.outcome == redirected.outcome == UrlOutcome.FORBIDDEN_ADDRESS, (direct, redirected)
    assert redirected.redirects == 1
    assert forbidden_hits == {}


def test_the_allowed_server_spelled_with_fullwidth_digits_is_fetched():
    """Folding works both ways: the allow-list matches the host the client will use."""
    app, hits = image_app({"/a.jpg": (JPEG, {})})
    with serve(app) as port:
        r = fetch(f"http://{fullwidth('127.0.0.1')}:{port}/a.jpg", [f"127.0.0.1:{port}"])
    assert r.body == JPEG and hits == {"/a.jpg": 1}


def test_redirect_locations_that_do_not_parse_are_bad_urls():
    app, _ = raw_redirect_app("http://[::1/x")
    with serve(app) as port:
        r = fetch(f"http://127.0.0.1:{port}/r", [f"127.0.0.1:{port}"])
    assert r.outcome == UrlOutcome.BAD_URL and r.redirects == 1


class OfflineResolver:
    """Answers every name with one address and never asks DNS."""

    def __init__(self, address: str) -> None:
        self.address, self.asked = address, []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        self.asked.append(host)
        return [{"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self):
        pass


def test_the_downloader_resolves_names_through_the_injected_resolver():
    app, hits = image_app({"/a.jpg": (JPEG, {})})
    with serve(app) as port:
        resolver = OfflineResolver("127.0.0.1")

        async def go():
            async with Downloader(cfg(), [f"images.test:{port}"], resolver=resolver) as d:
                return await d.fetch(f"http://images.test:{port}/a.jpg"), await d.fetch(f"http://other.test:{port}/a.jpg")
        allowed, refused = asyncio.run(go())
    assert allowed.body == JPEG and refused.outcome == UrlOutcome.FORBIDDEN_ADDRESS
    assert resolver.asked == ["images.test", "other.test"] and hits == {"/a.jpg": 1}


AUTHORITY_PARTS = ["", "user@", "u:p@", "@", ":@", "h", "127.0.0.1", "[::1]", "[", "]", ":", ":80", ":x", ".", "%", "/"]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["http", "https", "file", "ftp", "HTTP", "x", ""]), st.sampled_from(["://", ":", ":/", "//"]),
       st.lists(st.sampled_from(AUTHORITY_PARTS), max_size=5), st.text(max_size=8))
def test_host_key_of_any_url_is_a_key_never_an_error(scheme, colon, parts, rest):
    """Per-host limits key every URL of a list, whatever it holds (yarl raised IndexError for
    "file://user@": an empty host after user info)."""
    url = scheme + colon + "".join(parts) + rest
    assert isinstance(host_key(url), str)
