"""Engines: backoff, rate cap, ddgs (recorded answers, never the network), sandbox over HTTP
(a small server on 127.0.0.1 started here), the search cache and make_engine."""
import asyncio
import json
import random
import socket
import threading
from pathlib import Path

import ddgs
import ddgs.http_client
import pytest
from aiohttp import web
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from explorer.config import CrawlConfig
from explorer.engines import (Backoff, CachedEngine, CorpusEngine, DDGSEngine, Engine, RateLimiter,
                              SandboxEngine, SearchOutcome, search_key, clean_results, make_engine)
from explorer.records import SearchResult

DATA = Path(__file__).parent / "data"
RED_ROSE = json.loads((DATA / "ddgs_images_red_rose.json").read_text())
VALID_RED_ROSE = [r for r in RED_ROSE if r["image"].startswith("http")]


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class MaxJitter:
    """An rng whose 'uniform' always answers the top of the range: delays equal their caps."""

    def uniform(self, a, b):
        return b


class FakeDDGS:
    """Stands in for `ddgs.DDGS`: `factory(timeout=...)` returns it; `images()` plays a script
    of answers (lists) and the real ddgs exception classes."""

    def __init__(self, script, clock=None):
        self.script = list(script)
        self.clock = clock
        self.calls = []

    def __call__(self, timeout=None):
        return self

    def images(self, query, **kwargs):
        self.calls.append({"query": query, "kwargs": kwargs, "thread": threading.get_ident(),
                           "at": self.clock() if self.clock else None})
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def crawl_cfg(**kw) -> CrawlConfig:
    base = dict(search_interval_s=0.0, search_retries=3, search_backoff_s=2.0,
                search_backoff_max_s=60.0)
    base.update(kw)
    return CrawlConfig(**base)


# --- backoff and rate cap -------------------------------------------------------------------

def test_backoff_is_exponential_with_full_jitter():
    b = Backoff(base_s=2.0, retries=5, max_s=10.0, rng=random.Random(0))
    assert [b.cap(i) for i in range(5)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    delays = [[b.delay(i) for _ in range(200)] for i in range(4)]
    for i, ds in enumerate(delays):
        assert all(0.0 <= d <= b.cap(i) for d in ds)
        assert max(ds) > 0.8 * b.cap(i) and min(ds) < 0.2 * b.cap(i)  # full jitter spans [0, cap]
    means = [sum(ds) / len(ds) for ds in delays]
    assert means[0] < means[1] < means[2]

    t = FakeTime()
    b = Backoff(base_s=1.5, retries=3, rng=MaxJitter(), sleep=t.sleep)
    for i in range(3):
        asyncio.run(b.wait(i))
    assert t.sleeps == [1.5, 3.0, 6.0]


def test_rate_limiter_spaces_concurrent_starts():
    t = FakeTime()
    limiter = RateLimiter(3.0, clock=t.clock, sleep=t.sleep)
    starts = []

    async def one():
        await limiter.wait()
        starts.append(t.clock())

    async def main():
        await asyncio.gather(*(one() for _ in range(5)))

    asyncio.run(main())
    assert len(starts) == 5
    assert all(b - a >= 3.0 for a, b in zip(starts, starts[1:]))
    assert starts[-1] - starts[0] == pytest.approx(12.0)


# --- ddgs -----------------------------------------------------------------------------------

def test_ddgs_results_map_to_search_results():
    fake = FakeDDGS([RED_ROSE])
    engine = DDGSEngine(crawl_cfg(search_region="uk-en", search_safesearch="off"), ddgs_factory=fake)
    out = asyncio.run(engine.search("red rose", max_results=50))
    assert out.ok and out.attempts == 1 and not out.retryable
    # the raw-image and empty-image rows are dropped, the rest keep their order
    assert [r.image for r in out.results] == [r["image"] for r in VALID_RED_ROSE]
    assert all(isinstance(r, SearchResult) for r in out.results)
    first = out.results[0]
    assert first == SearchResult(title=RED_ROSE[0]["title"], image=RED_ROSE[0]["image"],
                                 thumbnail=RED_ROSE[0]["thumbnail"], url=RED_ROSE[0]["url"],
                                 height=600, width=900, source="Bing")
    lincoln = next(r for r in out.results if "lincoln" in r.image)
    assert (lincoln.width, lincoln.height) == (1024, 768)        # ddgs strings become ints
    call = fake.calls[0]
    assert call["query"] == "red rose"
    assert call["kwargs"] == {"region": "uk-en", "safesearch": "off", "max_results": 50, "page": 1,
                              "backend": "auto"}
    assert call["thread"] != threading.get_ident()                # ran in a worker thread

    capped = asyncio.run(DDGSEngine(crawl_cfg(), ddgs_factory=FakeDDGS([RED_ROSE]))
                         .search("red rose", max_results=3))
    assert len(capped.results) == 3


def test_ddgs_retries_its_exceptions_with_growing_backoff():
    t = FakeTime()
    fake = FakeDDGS([DDGSException("No results found."), TimeoutException("timed out"),
                     RatelimitException("202 Ratelimit"), RED_ROSE])
    engine = DDGSEngine(crawl_cfg(search_retries=5, search_backoff_s=2.0), ddgs_factory=fake,
                        sleep=t.sleep, clock=t.clock, rng=MaxJitter())
    out = asyncio.run(engine.search("red rose", max_results=10))
    assert out.ok and out.attempts == 4 and len(out.results) == len(VALID_RED_ROSE)
    assert t.sleeps == [2.0, 4.0, 8.0]


@pytest.mark.parametrize("exc, reason", [
    (DDGSException("No results found."), "no results"),
    (TimeoutException("https://duckduckgo.com/i.js timed out"), "timeout"),
    (RatelimitException("202 Ratelimit"), "rate limited"),
    (DDGSException("ConnectError: dns error"), "ddgs error"),
])
def test_ddgs_gives_up_with_an_error_value(exc, reason):
    t = FakeTime()
    engine = DDGSEngine(crawl_cfg(search_retries=3), ddgs_factory=FakeDDGS([exc]),
                        sleep=t.sleep, clock=t.clock, rng=random.Random(1))
    out = asyncio.run(engine.search("red rose", max_results=10))
    assert out.results == [] and reason in out.error and out.retryable
    assert out.attempts == 4 and len(t.sleeps) == 3
    assert all(0 <= d <= 2.0 * 2 ** i for i, d in enumerate(t.sleeps))


def test_ddgs_rate_cap_holds_across_concurrent_searches():
    t = FakeTime()
    fake = FakeDDGS([RED_ROSE], clock=t.clock)
    engine = DDGSEngine(crawl_cfg(search_interval_s=4.0), ddgs_factory=fake,
                        sleep=t.sleep, clock=t.clock)

    async def one_by_one():
        return [await engine.search(f"rose {i}", 5) for i in range(3)]

    async def together():
        return await asyncio.gather(*(engine.search(f"tulip {i}", 5) for i in range(4)))

    outs = asyncio.run(one_by_one())
    assert all(o.ok for o in outs)
    times = [c["at"] for c in fake.calls]
    assert times == [1000.0, 1004.0, 1008.0] and t.sleeps == [4.0, 4.0]

    t.sleeps.clear()
    outs = asyncio.run(together())
    assert all(o.ok for o in outs) and len(fake.calls) == 7
    assert t.sleeps == [4.0, 4.0, 4.0, 4.0]   # the first waits out the gap since "rose 2" too


def test_ddgs_attempt_that_never_answers_is_a_timeout():
    release = threading.Event()

    class Stuck:
        def __call__(self, timeout=None):
            return self

        def images(self, query, **kwargs):
            release.wait(10)
            return RED_ROSE

    engine = DDGSEngine(crawl_cfg(search_retries=0, search_timeout_s=0.2), ddgs_factory=Stuck())

    async def main():
        try:
            return await engine.search("red rose", 10)
        finally:
            release.set()

    out = asyncio.run(main())
    assert "timeout" in out.error and out.retryable and out.attempts == 1


def test_ddgs_bad_safesearch_is_a_clear_error():
    with pytest.raises(ValueError, match="search_safesearch"):
        DDGSEngine(crawl_cfg(search_safesearch="strict"))


def recorded_duckduckgo(monkeypatch) -> tuple[str, list]:
    """ddgs's HTTP client answering from a recording of DuckDuckGo's image search (any other
    request fails as if that backend were down); returns the answer's JSON text and the list
    of (method, url, params) requests it gets."""
    ijs = (DATA / "ddgs_ijs_tabby_cat.json").read_text()
    requests = []

    class Answer:
        def __init__(self, text):
            self.status_code, self.text, self.content = 200, text, text.encode()

    def recorded(self, method, url, *args, **kwargs):
        requests.append((method, url, kwargs.get("params")))
        if url == "https://duckduckgo.com":
            return Answer('<script>vqd="4-118263907541728136425613487653219850112";</script>')
        if url == "https://duckduckgo.com/i.js":
            return Answer(ijs)
        raise DDGSException(f"no recorded answer for {url}")

    monkeypatch.setattr(ddgs.http_client.HttpClient, "request", recorded)
    return ijs, requests


@pytest.mark.parametrize("backend", ["duckduckgo", "auto"])
def test_real_ddgs_images_through_a_recorded_duckduckgo_answer(monkeypatch, backend):
    """The real `ddgs.DDGS().images()` (backend choice, payload, parsing, ranking) with only its
    HTTP client replaced by recorded answers: checks our call matches the installed ddgs. Any
    other request (bing, under "auto") fails as if that backend were down."""
    ijs, requests = recorded_duckduckgo(monkeypatch)
    engine = DDGSEngine(crawl_cfg(search_backend=backend))   # the default factory: ddgs.DDGS
    out = asyncio.run(engine.search("tabby cat", max_results=10))
    assert out.ok, out.error
    expected = json.loads(ijs)["results"]
    assert sorted(r.image for r in out.results) == sorted(e["image"] for e in expected)
    wiki = next(r for r in out.results if "wikimedia" in r.image)
    assert (wiki.width, wiki.height, wiki.source) == (2048, 1365, "Bing")
    assert wiki.title == "Tabby cat on snow - Wikimedia Commons"
    ddg = {"https://duckduckgo.com", "https://duckduckgo.com/i.js"}
    urls = {u for _, u, _ in requests}
    assert ddg <= urls and urls - ddg <= ({"https://www.bing.com/images/async"} if backend == "auto" else set())
    ijs_params = next(p for _, u, p in requests if u.endswith("i.js"))
    assert ijs_params["q"] == "tabby cat" and ijs_params["l"] == "us-en" and ijs_params["p"] == "1"


def test_ddgs_no_results_past_the_first_page_is_an_empty_answer():
    """A concept's pages ran out: an answer with no results (no retries, no failure that would
    pause the crawl); on page 1 the same exception is still a failure (a rate limit looks so)."""
    t = FakeTime()
    fake = FakeDDGS([DDGSException("No results found.")])
    engine = DDGSEngine(crawl_cfg(search_retries=2), fake, sleep=t.sleep, rng=MaxJitter())
    later = asyncio.run(engine.search("red rose", 35, page=3))
    assert later.ok and later.results == [] and later.attempts == 1 and t.sleeps == []
    first = asyncio.run(engine.search("red rose", 35))
    assert not first.ok and first.retryable and first.attempts == 3


def test_real_ddgs_second_page_from_one_backend(monkeypatch):
    """A "next page" refinement on the "duckduckgo" backend reaches the real ddgs as DuckDuckGo's
    offset of 100 results (its page size), and asks no other backend."""
    _, requests = recorded_duckduckgo(monkeypatch)
    engine = DDGSEngine(crawl_cfg(search_backend="auto"))
    out = asyncio.run(engine.search("tabby cat", max_results=10, page=2, backend="duckduckgo"))
    assert out.ok, out.error
    assert {u for _, u, _ in requests} == {"https://duckduckgo.com", "https://duckduckgo.com/i.js"}
    ijs_params = next(p for _, u, p in requests if u.endswith("i.js"))
    assert ijs_params["s"] == "100"


# --- sandbox over HTTP ----------------------------------------------------------------------

def sandbox_rows(q: str, n: int) -> list[dict]:
    rows = [{"title": f"{q} {i}", "image": f"http://127.0.0.1:9/img/{q.replace(' ', '_')}_{i}.jpg",
             "thumbnail": "", "url": f"http://127.0.0.1:9/page/{i}", "height": 64, "width": 96,
             "source": "sandbox"} for i in range(n)]
    rows.insert(1, {"title": "no image"})
    return rows


async def start_search_server(stall: asyncio.Event):
    """A tiny stand-in for the sandbox's /search: the query text picks the behaviour."""
    hits: dict[str, int] = {}
    seen_params = []

    async def search(request: web.Request):
        q = request.query["q"]
        n = int(request.query["max_results"])
        seen_params.append(dict(request.query))
        hits[q] = hits.get(q, 0) + 1
        if q == "limited" and hits[q] <= 2:
            return web.Response(status=429, text="slow down")
        if q == "accepted" and hits[q] == 1:
            return web.Response(status=202)
        if q == "broken":
            return web.Response(status=503)
        if q == "missing":
            return web.Response(status=404)
        if q == "badjson":
            return web.Response(text="[{\"title\": ", content_type="application/json")
        if q == "dict":
            return web.json_response({"results": []})
        if q == "stall":
            await stall.wait()
        return web.json_response(sandbox_rows(q, n))

    app = web.Application()
    app.router.add_get("/search", search)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}", hits, seen_params


def run_sandbox(queries, cfg=None, max_results=4, base_url=None):
    """Search each query against a fresh server; returns outcomes, hits, params, sleeps."""
    t = FakeTime()

    async def main():
        stall = asyncio.Event()
        runner, url, hits, params = await start_search_server(stall)
        engine = SandboxEngine(base_url or url, cfg or crawl_cfg(), sleep=t.sleep, rng=MaxJitter())
        try:
            outs = [await engine.search(q, max_results) for q in queries]
        finally:
            stall.set()
            await engine.aclose()
            await runner.cleanup()
        return outs, hits, params

    outs, hits, params = asyncio.run(main())
    return outs, hits, params, t.sleeps


def test_sandbox_search_returns_clean_results():
    (out,), hits, params, sleeps = run_sandbox(["red rose"], max_results=4)
    assert out.ok and out.attempts == 1 and sleeps == []
    assert [r.title for r in out.results] == ["red rose 0", "red rose 1", "red rose 2", "red rose 3"]
    assert all(r.source == "sandbox" and r.width == 96 for r in out.results)
    assert params == [{"q": "red rose", "max_results": "4", "page": "1"}]


def test_sandbox_engine_sends_the_page_and_refuses_what_it_does_not_offer():
    t = FakeTime()

    async def main():
        runner, url, _, params = await start_search_server(asyncio.Event())
        engine = SandboxEngine(url, crawl_cfg(), sleep=t.sleep)
        try:
            out = await engine.search("red rose", 3, page=4)
            with pytest.raises(ValueError, match="no backend"):
                await engine.search("red rose", 3, backend="bing")
            with pytest.raises(ValueError, match="no results page 0"):
                await engine.search("red rose", 3, page=0)
        finally:
            await engine.aclose()
            await runner.cleanup()
        return out, params

    out, params = asyncio.run(main())
    assert out.ok and params == [{"q": "red rose", "max_results": "3", "page": "4"}]


def test_sandbox_large_answer_arrives_whole():
    (out,), _, _, _ = run_sandbox(["peony"], max_results=3000)    # ~0.5 MB of JSON
    assert out.ok and len(out.results) == 3000


def test_clean_results_drops_bad_rows_and_repeats():
    rows = [{"image": "http://[::1/x.jpg"}, "not a dict", {"image": "ftp://a.org/x.jpg"},
            {"image": "https:///x.jpg"}, {"image": " https://a.org/x.jpg ", "title": "x"},
            {"image": "https://a.org/x.jpg"}, {"image": "HTTPS://a.org/y.jpg", "source": "Bing"},
            {"image": "file:///data/z.jpg"}]
    kept = clean_results(rows, 10, default_source="ddgs")
    assert [(r.image, r.source) for r in kept] == [("https://a.org/x.jpg", "ddgs"),
                                                   ("HTTPS://a.org/y.jpg", "Bing")]
    assert clean_results(rows, 1, default_source="ddgs") == kept[:1]
    assert clean_results({"image": "x"}, 5) == []
    assert clean_results(rows, 10, schemes=("https", "file"))[-1].image == "file:///data/z.jpg"


def test_sandbox_rate_limits_are_retried_with_backoff():
    outs, hits, _, sleeps = run_sandbox(["limited", "accepted"], cfg=crawl_cfg(search_backoff_s=0.5))
    assert all(o.ok and len(o.results) == 4 for o in outs)
    assert [o.attempts for o in outs] == [3, 2]
    assert hits == {"limited": 3, "accepted": 2}
    assert sleeps == [0.5, 1.0, 0.5]


@pytest.mark.parametrize("query, reason, retryable, attempts", [
    ("broken", "HTTP 503", True, 3),
    ("missing", "HTTP 404", False, 1),
    ("badjson", "bad JSON", False, 1),
    ("dict", "bad JSON", False, 1),
])
def test_sandbox_failures_are_values(query, reason, retryable, attempts):
    (out,), hits, _, sleeps = run_sandbox([query], cfg=crawl_cfg(search_retries=2))
    assert out.results == [] and reason in out.error
    assert out.retryable is retryable and out.attempts == attempts == hits[query]
    assert len(sleeps) == attempts - 1


def test_sandbox_timeout_and_refused_connection_are_retryable():
    (out,), hits, _, _ = run_sandbox(["stall"], cfg=crawl_cfg(search_retries=0, search_timeout_s=0.3))
    assert "timeout" in out.error and out.retryable and hits["stall"] == 1

    with socket.socket() as s:                  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    (out,), _, _, sleeps = run_sandbox(["red rose"], cfg=crawl_cfg(search_retries=1), base_url=dead)
    assert "connection error" in out.error and out.retryable and out.attempts == 2


# --- the search cache -----------------------------------------------------------------------

class DictStore:
    def __init__(self):
        self.data: dict[tuple[str, str], list[dict]] = {}

    def get_search_results(self, engine_name, query):
        return self.data.get((engine_name, query))

    def put_search_results(self, engine_name, query, results):
        self.data[(engine_name, query)] = results


class ScriptedEngine(Engine):
    name = "scripted"

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.calls = []
        self.gate: asyncio.Event | None = None

    async def search(self, query, max_results, page=1, backend=""):
        self.calls.append(query)
        if self.gate is not None:
            await self.gate.wait()
        return self.outcomes.pop(0)


def rose_results(n):
    return [SearchResult.from_dict(r) for r in VALID_RED_ROSE[:n]]


def test_cached_engine_never_sends_a_query_twice():
    store = DictStore()
    inner = ScriptedEngine([SearchOutcome(rose_results(3)), SearchOutcome([])])
    engine = CachedEngine(inner, store)
    assert engine.name == "scripted"

    async def main():
        first = await engine.search("red rose", 10)
        again = await engine.search("red rose", 2)
        empty = await engine.search("nothing here", 10)
        empty_again = await engine.search("nothing here", 10)
        return first, again, empty, empty_again

    first, again, empty, empty_again = asyncio.run(main())
    assert inner.calls == ["red rose", "nothing here"]
    assert first.results == rose_results(3) and first.attempts == 1
    assert again.results == rose_results(2) and again.attempts == 0
    assert empty.ok and empty_again.ok and empty_again.results == [] and empty_again.attempts == 0
    assert store.data[("scripted", "red rose")][0]["image"] == VALID_RED_ROSE[0]["image"]


def test_cached_engine_keeps_each_page_and_backend_apart():
    """Page 2, or another backend, is another request: never answered by page 1's results,
    and each is cached under its own key (page 1 from the default backend keeps the bare text,
    as in databases made before refinements)."""
    store = DictStore()
    inner = ScriptedEngine([SearchOutcome(rose_results(1)), SearchOutcome(rose_results(2)),
                            SearchOutcome(rose_results(3))])
    inner.pages, inner.backends = True, ("bing",)
    engine = CachedEngine(inner, store)

    async def main():
        return [await engine.search("red rose", 10), await engine.search("red rose", 10, page=2),
                await engine.search("red rose", 10, backend="bing"),
                await engine.search("red rose", 10, page=2)]

    one, two, bing, two_again = asyncio.run(main())
    assert [len(one.results), len(two.results), len(bing.results)] == [1, 2, 3]
    assert two_again.attempts == 0 and two_again.results == two.results
    assert set(store.data) == {("scripted", "red rose"), ("scripted", search_key("red rose", 2)),
                               ("scripted", search_key("red rose", backend="bing"))}
    with pytest.raises(ValueError):
        asyncio.run(CachedEngine(ScriptedEngine([]), store).search("red rose", 10, page=2))


def test_ddgs_asks_the_page_and_backend_it_is_given():
    fake = FakeDDGS([[VALID_RED_ROSE[0]]])
    engine = DDGSEngine(crawl_cfg(search_backend="auto"), fake)
    assert engine.pages and engine.backends == ("bing", "duckduckgo")
    out = asyncio.run(engine.search("red rose", 35, page=3, backend="bing"))
    assert out.ok and fake.calls[0]["kwargs"]["page"] == 3 and fake.calls[0]["kwargs"]["backend"] == "bing"
    asyncio.run(engine.search("red rose", 35))
    assert fake.calls[1]["kwargs"]["page"] == 1 and fake.calls[1]["kwargs"]["backend"] == "auto"
    assert DDGSEngine(crawl_cfg(search_backend="bing"), fake).backends == ("duckduckgo",)


def test_cached_engine_does_not_cache_errors_and_shares_in_flight_queries():
    store = DictStore()
    inner = ScriptedEngine([SearchOutcome([], error="rate limited: HTTP 429", retryable=True),
                            SearchOutcome(rose_results(2), attempts=2)])
    engine = CachedEngine(inner, store)

    async def main():
        failed = await engine.search("red rose", 10)
        assert store.data == {}
        inner.gate = asyncio.Event()
        tasks = [asyncio.create_task(engine.search("red rose", 10)) for _ in range(3)]
        while not inner.calls[1:]:          # the first of them is in the engine
            await asyncio.sleep(0)
        inner.gate.set()
        return failed, await asyncio.gather(*tasks)

    failed, shared = asyncio.run(main())
    assert failed.error and failed.retryable
    assert inner.calls == ["red rose", "red rose"]          # 3 concurrent askers, 1 request
    assert all(o.results == rose_results(2) for o in shared)
    assert sorted(o.attempts for o in shared) == [0, 0, 2]
    assert ("scripted", "red rose") in store.data


# --- make_engine ----------------------------------------------------------------------------

def test_make_engine_parses_specs(tmp_path):
    cfg = crawl_cfg()
    assert isinstance(make_engine("ddgs", cfg), DDGSEngine)
    sandbox = make_engine("sandbox", cfg, sandbox_url="http://127.0.0.1:8123/")
    assert isinstance(sandbox, SandboxEngine) and sandbox.search_url == "http://127.0.0.1:8123/search"
    (tmp_path / "rose.jpg").write_bytes(b"\xff\xd8\xff")
    assert isinstance(make_engine(f"corpus:{tmp_path}", cfg), CorpusEngine)
    with pytest.raises(ValueError, match="sandbox web's URL"):
        make_engine("sandbox", cfg)
    with pytest.raises(ValueError, match="needs a path"):
        make_engine("corpus:", cfg)
    with pytest.raises(ValueError, match="does not exist"):
        make_engine(f"corpus:{tmp_path / 'nope'}", cfg)
    with pytest.raises(ValueError, match="unknown search engine 'bing'.*ddgs, sandbox, corpus:PATH"):
        make_engine("bing", cfg)
