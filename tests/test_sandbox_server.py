"""The sandbox web over HTTP: search results, fault rates and fault behaviour, load, /stats.

Every request goes to 127.0.0.0/8 or [::1] only, with client timeouts."""
import asyncio
import gzip
import io
import ipaddress
import json
import math
import struct
from collections import Counter
import urllib.request
from urllib.parse import urlsplit

import aiohttp
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from explorer.sandbox import faults, image_id_of_url, start_sandbox
from explorer.sandbox.server import is_loopback
from explorer.sandbox.world import World

TIMEOUT = aiohttp.ClientTimeout(total=20)
MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")


@pytest.fixture(scope="module")
def clean():
    with start_sandbox(seed=0, profile="none") as server:
        yield server


def test_serves_as_soon_as_started_and_stops():
    server = start_sandbox(seed=5, profile="realistic")
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.host_port == server.url[len("http://"):]
        with urllib.request.urlopen(f"{server.url}/stats", timeout=20) as resp:  # no wait, no retry
            assert resp.status == 200 and isinstance(json.loads(resp.read()), dict)
    finally:
        server.stop()


def test_search_answers_ddgs_keys_and_relates_to_the_query(clean):
    async def go():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            async with s.get(f"{clean.url}/search", params={"q": "yellow sunflower", "max_results": "40"}) as r:
                assert r.status == 200
                results = await r.json()
            assert len(results) == 40
            for res in results:
                assert set(res) == {"title", "image", "thumbnail", "url", "height", "width", "source"}
                assert res["source"] == "sandbox" and res["image"].startswith(clean.url + "/img/")
            families = Counter(clean.world.image_info(image_id_of_url(r["image"])).family for r in results)
            assert families["flowers"] >= 0.7 * len(results)
            first = results[0]
            async with s.get(first["image"]) as r:
                body = await r.read()
            with Image.open(io.BytesIO(body)) as img:
                assert img.size == (first["width"], first["height"])
            for key in ("thumbnail", "url"):
                async with s.get(first[key]) as r:
                    assert r.status == 200
            async with s.get(f"{clean.url}/search", params={"q": "yellow sunflower", "max_results": "40"}) as r:
                assert await r.json() == results  # deterministic
    asyncio.run(go())



def test_search_pages_and_page_size_from_the_config(clean):
    async def get(s, url, **params):
        async with s.get(f"{url}/search", params={"q": "red rose", **params}) as r:
            return r.status, await r.json()

    async def go():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for bad in ("0", "abc", "-2", "1001", "1.5"):
                status, body = await get(s, clean.url, max_results="10", page=bad)
                assert status == 400 and "page" in body["error"], bad
            status, first = await get(s, clean.url, max_results="40")
            assert status == 200 and (await get(s, clean.url, max_results="40", page="1"))[1] == first
            second = (await get(s, clean.url, max_results="40", page="2"))[1]
            assert len(second) == 40 and not {r["image"] for r in first} & {r["image"] for r in second}
            with start_sandbox(seed=0, profile="none", page_size=35) as paged:
                pages = [(await get(s, paged.url, max_results="100", page=str(p)))[1] for p in (1, 2)]
            assert [len(p) for p in pages] == [35, 35]
            assert not {r["image"] for r in pages[0]} & {r["image"] for r in pages[1]}
    asyncio.run(go())

def test_fault_rates_match_each_profile():
    paths = [f"/img/c{i % 2688}v{i // 2688}.jpg" for i in range(20000)]
    assert all(faults.image_fault(0, "none", p) is None for p in paths[:2000])
    for profile in ("realistic", "hostile"):
        rates = faults.PROFILES[profile]
        seen = Counter(faults.image_fault(0, profile, p) for p in paths)
        for kind in faults.IMAGE_FAULTS:
            expected = rates[kind] * len(paths)
            assert abs(seen[kind] - expected) <= 4 * math.sqrt(expected) + 3, (profile, kind, seen[kind], expected)
        searches = Counter(faults.search_fault(0, profile, f"q{i}", 0) for i in range(5000))
        for kind in faults.SEARCH_FAULTS:
            expected = rates[kind] * 5000
            assert abs(searches[kind] - expected) <= 4 * math.sqrt(expected) + 3, (profile, kind)
    assert faults.image_fault(0, "hostile", paths[7]) == faults.image_fault(0, "hostile", paths[7])
    with pytest.raises(ValueError):
        faults.check_profile("nasty")


def _url_per_fault(world: World, seed: int) -> dict[str, str]:
    """One image path of each fault kind under the hostile profile."""
    found = {}
    for i in range(5000):
        info = world.image_info(f"c{(i * 37) % len(world.concepts)}v{i % 40}")
        path = f"/img/{info.image_id}.{info.ext}"
        kind = faults.image_fault(seed, "hostile", path)
        if kind and kind not in found:
            found[kind] = path
    assert set(found) == set(faults.IMAGE_FAULTS)
    return found


def test_each_hostile_fault_is_served_as_described():
    with start_sandbox(seed=0, profile="hostile", stall_s=5.0, oversize_bytes=21_000_000) as server:
        urls = {k: server.url + p for k, p in _url_per_fault(server.world, 0).items()}
        checked = asyncio.run(_check_faults(server, urls))
        stats = server.stats()
    assert checked == set(faults.IMAGE_FAULTS) | set(faults.SEARCH_FAULTS)
    for kind in faults.IMAGE_FAULTS:
        assert stats["faults"][kind] == 1, kind
    assert stats["requests"]["img"] == len(faults.IMAGE_FAULTS) + 1  # + the redirect_ok target
    assert stats["forbidden_hits"] and sum(stats["forbidden_hits"].values()) == 1


async def _check_faults(server, urls: dict[str, str]) -> set[str]:
    checked = set()
    async with aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as s:
        async def get(kind, **kw):
            return await s.get(urls[kind], allow_redirects=False, **kw)

        for kind, status in (("http_404", 404), ("http_500", 500)):
            async with await get(kind) as r:
                assert r.status == status
            checked.add(kind)

        with pytest.raises(asyncio.TimeoutError):  # silent before the headers or mid-body
            async with await get("stall", timeout=aiohttp.ClientTimeout(sock_read=0.3)) as r:
                await r.read()
        checked.add("stall")

        async with await get("truncated") as r:
            assert r.status == 200 and r.content_length > 0
            if faults.variant(0, urlsplit(urls["truncated"]).path, 2) == 0:  # half a file
                with pytest.raises(OSError):
                    Image.open(io.BytesIO(await r.read())).load()
            else:  # a body short of its Content-Length
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
        checked.add("truncated")

        async with await get("wrong_content_type") as r:
            assert r.headers["Content-Type"].startswith("text/html")
            assert (await r.read()).startswith(MAGIC)
        checked.add("wrong_content_type")

        async with await get("html_as_image") as r:
            assert r.headers["Content-Type"].startswith("image/")
            assert (await r.read()).startswith(b"<!DOCTYPE html>")
        checked.add("html_as_image")

        async with await get("bomb") as r:
            body = await r.read()
        assert body.startswith(b"\x89PNG") and len(body) < 1_000_000
        assert struct.unpack(">II", body[16:24]) == (30000, 30000)
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(body))
        checked.add("bomb")

        async with await get("oversize") as r:
            assert r.content_length == 21_000_000
            assert len(await r.read()) == 21_000_000
        checked.add("oversize")

        async with await get("oversize_chunked") as r:
            assert r.content_length is None and r.headers["Transfer-Encoding"] == "chunked"
            assert len(await r.read()) == 21_000_000
        checked.add("oversize_chunked")

        async with await get("gzip_bomb") as r:
            assert r.headers["Content-Encoding"] == "gzip"
            raw = await r.read()
        assert len(raw) < 1_000_000 and len(gzip.decompress(raw)) > 20_000_000
        checked.add("gzip_bomb")

        location, seen = urls["redirect_loop"], set()
        for _ in range(6):
            async with await s.get(location, allow_redirects=False) as r:
                assert r.status == 302
                location = str(r.url.join(aiohttp.helpers.URL(r.headers["Location"])))
                seen.add(location)
        assert len(seen) <= 3  # it goes round in circles
        checked.add("redirect_loop")

        async with await get("redirect_forbidden") as r:
            assert r.status == 302
            target = urlsplit(r.headers["Location"])
        assert is_loopback(target.hostname) and target.hostname != "127.0.0.1"
        assert f"{target.hostname}:{target.port}" != server.host_port
        async with s.get(r.headers["Location"]) as hit:  # the listener there counts it
            assert hit.status == 200
        checked.add("redirect_forbidden")

        async with await get("redirect_ok") as r:
            assert r.status == 302
            location = str(r.url.join(aiohttp.helpers.URL(r.headers["Location"])))
        async with s.get(location, allow_redirects=False) as r:
            assert r.status == 200 and (await r.read()).startswith(MAGIC)
        checked.add("redirect_ok")

        async with await get("x_robots") as r:
            assert r.headers["X-Robots-Tag"] in ("noai", "noimageai")
            assert (await r.read()).startswith(MAGIC)
        checked.add("x_robots")

        statuses = Counter()
        for _ in range(40):  # the same search, retried: rate limits come and go
            async with s.get(f"{server.url}/search", params={"q": "red rose", "max_results": "5"}) as r:
                statuses[r.status] += 1
                if r.status == 429:
                    assert "Retry-After" in r.headers
        assert statuses[200] and statuses[429] and statuses[202]
        checked |= {"http_429", "http_202"}
    stats = server.stats()
    assert stats["faults"]["http_429"] == statuses[429] and stats["faults"]["http_202"] == statuses[202]
    assert stats["requests"]["search"] == 40
    return checked


def test_stats_count_what_was_requested():
    with start_sandbox(seed=3, profile="hostile", stall_s=0.2, oversize_bytes=100_000) as server:
        world = server.world
        infos = [world.image_info(f"c{i * 11}v{i % 40}") for i in range(150)]
        paths = [f"/img/{i.image_id}.{i.ext}" for i in infos]
        expected = Counter(faults.image_fault(3, "hostile", p) for p in paths)

        async def go():
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
                async def one(path):
                    try:
                        async with s.get(server.url + path, allow_redirects=False) as r:
                            await r.read()
                    except aiohttp.ClientError:
                        pass
                await asyncio.gather(*(one(p) for p in paths))
        asyncio.run(go())
        stats = server.stats()
    expected.pop(None)
    assert stats["faults"] == dict(expected)
    assert stats["requests"] == {"img": len(paths)}
    assert stats["images_served"] == sum(1 for p in paths if faults.image_fault(3, "hostile", p) in
                                         (None, "wrong_content_type", "x_robots"))
    assert stats["forbidden_hits"] == {}


def test_200_concurrent_clients_get_no_errors(clean):
    before = clean.stats()

    async def client(i: int) -> int:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            q = clean.world.concepts[(i * 13) % len(clean.world.concepts)]
            async with s.get(f"{clean.url}/search", params={"q": q, "max_results": "10"}) as r:
                assert r.status == 200
                results = await r.json()
            async with s.get(results[i % len(results)]["image"]) as r:
                assert r.status == 200
                body = await r.read()
        with Image.open(io.BytesIO(body)) as img:
            img.load()
        return 1

    async def go():
        return await asyncio.gather(*(client(i) for i in range(200)))
    assert sum(asyncio.run(go())) == 200
    after = clean.stats()
    assert after["requests"]["search"] - before["requests"].get("search", 0) == 200
    assert after["requests"]["img"] - before["requests"].get("img", 0) == 200
    assert after["faults"] == {}


def test_serve_command_rejects_an_unknown_profile():
    result = CliRunner().invoke(app, ["sandbox", "serve", "--profile", "nasty"])
    assert result.exit_code == 1
    assert "sandbox.profile=nasty" in result.output and "Traceback" not in result.output


def test_forbidden_redirects_stay_on_loopback_off_the_allow_list():
    with start_sandbox(seed=1, profile="hostile") as server:
        world = server.world
        paths = []
        for i in range(3000):
            info = world.image_info(f"c{i % 2688}v{i // 2688}")
            path = f"/img/{info.image_id}.{info.ext}"
            if faults.image_fault(1, "hostile", path) == "redirect_forbidden":
                paths.append(path)

        async def go():
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
                out = []
                for path in paths[:30]:
                    async with s.get(server.url + path, allow_redirects=False) as r:
                        assert r.status == 302
                        out.append(urlsplit(r.headers["Location"]))
                return out
        targets = asyncio.run(go())
        assert server.stats()["forbidden_hits"] == {}
    hosts = {ipaddress.ip_address(t.hostname) for t in targets}
    allowed = {ipaddress.ip_address(h) for h in ("127.0.0.2", "::1", "::ffff:127.0.0.2")}
    assert hosts <= allowed and len(hosts) >= 2
    assert all(is_loopback(t.hostname) and f"{t.hostname}:{t.port}" != server.host_port for t in targets)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "example.com", "::"])
def test_only_loopback_addresses_are_served(host):
    with pytest.raises(ValueError):
        start_sandbox(host=host)
    with pytest.raises(ValueError):
        start_sandbox(forbidden_hosts=(host,))


@pytest.mark.parametrize("seed", [0, 7])
def test_outage_profiles_fail_searches_by_count_not_by_query(seed):
    """throttled: windows of THROTTLE_WINDOW searches, the first shut (429 or an empty 202),
    the next open, and so on; down: every search a 503; the other profiles: no outage."""
    w = faults.THROTTLE_WINDOW
    for n in range(6 * w):
        shut = faults.search_outage(seed, "throttled", n)
        assert (shut in ("http_429", "http_202")) if (n // w) % 2 == 0 else shut is None, n
        assert faults.search_outage(seed, "down", n) == "http_503"
        assert all(faults.search_outage(seed, p, n) is None for p in ("none", "realistic", "hostile"))
    kinds = Counter(faults.search_outage(seed, "throttled", n) for n in range(w))
    assert kinds["http_429"] and kinds["http_202"]   # both ways of saying "not now"


def test_throttled_and_down_are_served_over_http():
    async def statuses(server, n: int) -> list[int]:
        out = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for i in range(n):   # a different query each time: the outage is the engine's
                async with s.get(f"{server.url}/search", params={"q": f"rose {i}", "max_results": "3"}) as r:
                    body = await r.read()
                    out.append(r.status)
                    if r.status == 200:
                        assert isinstance(json.loads(body), list)
        return out

    w = faults.THROTTLE_WINDOW
    with start_sandbox(seed=0, profile="throttled") as server:
        got = asyncio.run(statuses(server, 3 * w))
        served = server.stats()["faults"]
    assert set(got[:w]) <= {429, 202} and set(got[w:2 * w]) == {200} and set(got[2 * w:]) <= {429, 202}
    assert served["http_429"] + served["http_202"] == 2 * w
    with start_sandbox(seed=0, profile="down") as server:
        assert set(asyncio.run(statuses(server, 5))) == {503}


def test_a_runs_sandbox_web_is_made_with_every_sandbox_setting():
    """The web a run starts and the target it writes are one world: the same looks, test images
    (whose copies the web re-posts) and pages."""
    from explorer.run.assemble import sandbox_for
    from explorer.config import Config, apply_overrides

    cfg = apply_overrides(Config(), ["run.target=sandbox-flowers", "sandbox.page_size=7", "sandbox.looks=shared",
                                     "sandbox.test_per_class=3", "sandbox.page_decay=0.5"])
    with sandbox_for(cfg) as server:
        assert server.sandbox.options == cfg.sandbox
        assert server.world.looks == "shared" and server.world.test_per_class == 3
        assert server.sandbox.index.page_size == 7 and server.sandbox.index.page_decay == 0.5
