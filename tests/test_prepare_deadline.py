"""The preparation deadline (crawl.prepare_timeout_s): an image whose decode takes minutes of CPU
gets `decode_timeout` in seconds, once; the worker that held it is killed and replaced, and the
URLs it had in flight are fetched again by another; when `explore` is killed, workers busy
inside a decoder die with it."""
import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import simplejpeg
from aiohttp import web
from hypothesis import given, settings, strategies as st
from PIL import Image

from explorer.config import CrawlConfig
from explorer.crawl.crawler import Crawler, CrawlItem, open_cache
from explorer.crawl.fetchers import PrepareClock
from explorer.records import UrlOutcome
from explorer.sandbox.slow_jpeg import slow_jpeg
from tests.crawl_fixtures import jpeg_bytes, serve
from tests.proc_fixtures import descendants

ROOT = Path(__file__).resolve().parent.parent
SLOW = (2048, 20000)  # ~35 s of CPU to decode here, 0.5 MB: far past any deadline a test sets
GOOD = 4


def cfg(**kw) -> CrawlConfig:
    return CrawlConfig(**(dict(image_size=64, min_side=16, pool="process", workers=1, retries=0,
                               prepare_timeout_s=0.5) | kw))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return 0


def poll(check, deadline_s: float, what: str):
    end = time.monotonic() + deadline_s
    while not (value := check()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def slow_beside_good_app(slow: bytes):
    """/slow*.jpg answer `slow` at once; /{i}.jpg answer a good JPEG once `release` is set.
    `requested` is set when a slow image is asked for; `hits` counts requests by path."""
    requested, release, hits = threading.Event(), threading.Event(), {}

    async def handler(request):
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path.startswith("/slow"):
            requested.set()
            return web.Response(body=slow, content_type="image/jpeg")
        while not release.is_set():
            await asyncio.sleep(0.01)
        return web.Response(body=jpeg_bytes(120, 90, seed=70 + int(request.match_info["name"].split(".")[0])),
                            content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", handler)
    return app, requested, release, hits


# -- the hostile file ------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(side=st.integers(1024, 1400), scans=st.integers(0, 40))
def test_the_slow_jpeg_is_a_valid_flat_image_for_both_decoders(side, scans):
    body = slow_jpeg(side, scans)
    px = simplejpeg.decode_jpeg(body, colorspace="GRAY", strict=True)  # strict: no warning either
    assert px.shape == (side, side, 1) and px.min() == px.max() == 128
    with Image.open(io.BytesIO(body)) as im:
        im.load()
        assert im.size == (side, side) and im.getextrema() == (128, 128)


def test_the_slow_jpegs_decode_grows_with_its_scans_not_its_bytes():
    def decode_cpu(body: bytes) -> float:
        start = time.thread_time()
        simplejpeg.decode_jpeg(body, colorspace="GRAY")
        return time.thread_time() - start

    few, many = slow_jpeg(2048, 10), slow_jpeg(2048, 400)
    assert decode_cpu(many) / decode_cpu(few) > 5 * len(many) / len(few)


# -- the clock ------------------------------------------------------------------------------------
def test_the_clock_counts_a_preparations_cpu_not_its_waiting():
    clock, release = PrepareClock(), threading.Event()

    def spin():
        while not release.is_set():
            pass

    threads = [threading.Thread(target=clock.run, args=(key, fn)) for key, fn in
               (("waits", release.wait), ("spins", spin))]
    for t in threads:
        t.start()
    try:
        over = poll(lambda: clock.over(0.2), 30, "the spinning thread to pass 0.2 s of CPU")
        assert [key for key, _ in over] == ["spins"]
        assert clock.used("waits") < 0.05
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert clock.over(0.0) == [] and clock.used("spins") is None


# -- process mode ---------------------------------------------------------------------------------
def test_a_slow_decode_is_cut_at_the_deadline_and_the_workers_other_urls_are_fetched_again(tmp_path):
    app, requested, release, hits = slow_beside_good_app(slow_jpeg(*SLOW))
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, cfg())
        items = [CrawlItem(f"{base}/slow.jpg")] + [CrawlItem(f"{base}/{i}.jpg") for i in range(GOOD)]
        with Crawler.for_cache(cache, cfg(), allow=[f"127.0.0.1:{port}"]) as crawler:
            async def crawl_past_the_deadline():
                started = time.monotonic()
                crawl = asyncio.create_task(crawler.crawl(items))
                while not requested.is_set() or not crawler.fetcher.workers:
                    assert time.monotonic() - started < 30, "the slow image was never asked for"
                    await asyncio.sleep(0.01)
                (first,) = crawler.fetcher.workers
                while first.alive:  # the good URLs wait at the server meanwhile, in flight on this worker
                    assert time.monotonic() - started < 20, "the slow decode was not cut"
                    await asyncio.sleep(0.01)
                release.set()
                return await asyncio.wait_for(crawl, 30), first, time.monotonic() - started

            attempts, first, took = asyncio.run(crawl_past_the_deadline())
            by_url = {a.url.rsplit("/", 1)[1]: a for a in attempts}
            assert by_url["slow.jpg"].outcome == UrlOutcome.DECODE_TIMEOUT, by_url["slow.jpg"]
            assert "prepare_timeout_s" in by_url["slow.jpg"].reason
            assert [by_url[f"{i}.jpg"].outcome for i in range(GOOD)] == [UrlOutcome.OK] * GOOD
            assert all(hits[f"/{i}.jpg"] == 2 for i in range(GOOD))  # sent again, once each
            assert cache.db.image_stats()[0] == GOOD
            assert first.process.exitcode == -signal.SIGKILL and not running(first.process.pid)
            (second,) = crawler.fetcher.workers
            assert second.process.pid != first.process.pid and second.process.is_alive()

            again = asyncio.run(crawler.crawl(items[:1]))  # final: never fetched (nor decoded) again
            assert again[0].outcome == UrlOutcome.DECODE_TIMEOUT and again[0].recorded_before
            assert hits["/slow.jpg"] == 1
            assert crawler.fetcher._failed_starts == []
        assert not running(second.process.pid)
        cache.close()
    print(f"crawl with a decode past the deadline: {took:.1f} s")


def test_in_thread_mode_the_crawl_stops_waiting_at_the_deadline(tmp_path):
    app, _, release, _ = slow_beside_good_app(slow_jpeg(2048, 1500))  # ~2.5 s of CPU: the thread runs on
    release.set()
    c = cfg(pool="thread", workers=2, prepare_timeout_s=0.3)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, c)
        items = [CrawlItem(f"{base}/slow.jpg")] + [CrawlItem(f"{base}/{i}.jpg") for i in range(GOOD)]
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            attempts = asyncio.run(crawler.crawl(items))
        cache.close()
    outcomes = sorted(a.outcome.value for a in attempts)
    assert outcomes == ["decode_timeout"] + ["ok"] * GOOD


# -- workers die with explore -----------------------------------------------------------------------
def test_workers_busy_in_a_decoder_die_with_explore_fetch(tmp_path):
    app, _, release, _ = slow_beside_good_app(slow_jpeg(*SLOW))
    release.set()
    with serve(app) as port:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"http://127.0.0.1:{port}/slow{i}.jpg\n" for i in range(2)))
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "fetch", str(urls), "--cache-dir",
                                 str(tmp_path / "cache"), "--allow", f"127.0.0.1:{port}",
                                 "--set", "crawl.workers=2", "--set", "crawl.prepare_timeout_s=600"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tree: set[int] = set()
        try:
            def decoding() -> list[int]:  # the fork server's children, each past 1 s of CPU: in the decoder
                tree.update(descendants(proc.pid))
                workers = [p for p in tree if parent_of(p) not in (proc.pid, 0)]
                return workers if len(workers) == 2 and all(cpu_s(p) > 1.0 for p in workers) else []

            poll(decoding, 60, "two workers busy decoding")
            proc.kill()  # the parent only: the OOM killer, say
            proc.wait(10)
            end = time.monotonic() + 5
            while (left := [p for p in tree if running(p)]) and time.monotonic() < end:
                time.sleep(0.02)
            assert not left, "processes outlived explore fetch by 5 s"
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in tree:  # on a failure, leave nothing spinning behind
                if running(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
