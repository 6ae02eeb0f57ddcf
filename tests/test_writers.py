"""One writer per cache database: a second one is refused in one line, and two `explore fetch`
at once on one --cache-dir never leave an `ok` attempt without its image row."""
import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.db import WriterBusy, WriterLock
from cache.verify import verify
from explorer.config import CrawlConfig
from explorer.crawl.crawler import CHEAP_EMBEDDING, Crawler, CrawlItem, open_cache
from explorer.errors import UserError
from explorer.sandbox.server import start_sandbox
from tests.crawl_fixtures import image_app, jpeg_bytes, serve

ROOT = Path(__file__).resolve().parent.parent
CFG = CrawlConfig(image_size=48, workers=1, pool="thread")


def test_a_second_writer_of_one_database_is_refused_naming_the_first(tmp_path):
    first = open_cache(tmp_path / "cache", CFG)
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        open_cache(tmp_path / "cache", CFG)
    # a run's database elsewhere, on the same image store: a writer of its own
    (tmp_path / "run").mkdir()
    run = open_cache(tmp_path / "cache", CFG, db_path=tmp_path / "run" / "explore.db")
    with pytest.raises(WriterBusy):
        WriterLock(tmp_path / "run" / "explore.db").acquire()
    run.close()
    first.close()
    open_cache(tmp_path / "cache", CFG).close()  # closed: the next writer is welcome


def held_app():
    """/hold.jpg answers once `release` is set; `arrived` is set when its request is in."""
    body = jpeg_bytes(200, 150, seed=77)
    arrived, release = threading.Event(), threading.Event()

    async def hold(request):
        arrived.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return web.Response(body=body, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/hold.jpg", hold)
    return app, arrived, release


def fetch_cmd(url_file: Path, cache_dir: Path, allow: list[str]) -> list[str]:
    allows = [arg for a in allow for arg in ("--allow", a)]
    return [sys.executable, str(ROOT / "cli.py"), "fetch", str(url_file), "--cache-dir", str(cache_dir), *allows,
            "--json", "--set", "crawl.pool=thread", "--set", "crawl.image_size=48"]


def test_two_fetches_on_one_cache_dir_never_leave_an_ok_without_its_row(tmp_path):
    """Fetch A holds one request open mid-crawl (its batch uncommitted) while fetch B starts on
    the same --cache-dir: B is refused in one line naming A's pid, A finishes, B run again alone
    fetches the rest. Every URL ends stored with its row or with another final outcome, and the
    cache verifies clean."""
    app, arrived, release = held_app()
    cache_dir = tmp_path / "cache"
    with start_sandbox(seed=0, profile="none") as sandbox, serve(app) as hold_port:
        web_urls = [f"{sandbox.url}/img/{sandbox.world.web_image_id(i, 1)}.jpg" for i in range(16)]
        hold_url = f"http://127.0.0.1:{hold_port}/hold.jpg"
        (tmp_path / "a.txt").write_text("\n".join(web_urls[:10] + [hold_url]))
        (tmp_path / "b.txt").write_text("\n".join(web_urls[6:]))
        allow = [sandbox.host_port, f"127.0.0.1:{hold_port}"]
        a = subprocess.Popen(fetch_cmd(tmp_path / "a.txt", cache_dir, allow), cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert arrived.wait(60), "fetch A never reached the held URL"
            b = subprocess.run(fetch_cmd(tmp_path / "b.txt", cache_dir, allow), cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        finally:
            release.set()
            a_out, a_err = a.communicate(timeout=60)
        assert a.returncode == 0, a_err[-2000:]
        assert b.returncode == 1 and "Traceback" not in b.stderr, b.stderr[-2000:]
        errors = [line for line in b.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and f"pid {a.pid}" in errors[0], b.stderr

        again = subprocess.run(fetch_cmd(tmp_path / "b.txt", cache_dir, allow), cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr[-2000:]

    assert verify(cache_dir, embedding=CHEAP_EMBEDDING) == []
    with sqlite3.connect(cache_dir / "explore.db") as con:
        outcomes = dict(con.execute("SELECT url, outcome FROM attempts").fetchall())
        lost = con.execute("SELECT COUNT(*) FROM attempts a LEFT JOIN images i ON i.sha256 = a.sha256 "
                           "WHERE a.outcome = 'ok' AND i.sha256 IS NULL").fetchone()[0]
    assert set(outcomes) == set(web_urls) | {hold_url} and lost == 0
    assert list(outcomes.values()).count("ok") >= 14  # the sandbox's images are mostly distinct


IMAGES = [jpeg_bytes(160, 120, seed=200 + i) for i in range(5)]


calls_of_images = st.lists(st.lists(st.integers(0, len(IMAGES) - 1), min_size=1, max_size=4), min_size=2, max_size=4)


def test_concurrent_crawls_in_one_writer_keep_an_image_once(tmp_path):
    """The loop crawls each query's results in a concurrent call: however the same bytes come
    (from other URLs, in other calls), each image gets one row, one `ok` attempt, one vector.
    Each drawn case is a run of its own on one shared store (which also keeps it cheap)."""
    paths = {f"/{c}-{j}-{img}.jpg": (IMAGES[img], {}) for c in range(4) for j in range(4) for img in range(len(IMAGES))}
    app, _ = image_app(paths)
    runs = iter(range(10**6))

    @settings(max_examples=15, deadline=None, database=None)
    @given(calls_of_images)
    def crawl_concurrently(calls):
        db_path = tmp_path / f"run{next(runs)}" / "explore.db"
        cache = open_cache(tmp_path / "store", CFG, db_path=db_path)

        async def crawl_all():
            with Crawler.for_cache(cache, CFG, allow=[f"127.0.0.1:{port}"]) as crawler:
                return await asyncio.gather(*(crawler.crawl([CrawlItem(f"{base}/{c}-{j}-{img}.jpg")
                                                            for j, img in enumerate(imgs)])
                                              for c, imgs in enumerate(calls)))

        attempts = [a for call in asyncio.run(crawl_all()) for a in call]
        n_images, n_vectors = cache.db.image_stats()[0], len(cache.index)
        cache.close()
        distinct = len({img for imgs in calls for img in imgs})
        assert [a.outcome.value for a in attempts].count("ok") == distinct == n_images == n_vectors
        assert verify(tmp_path / "store", db_path, embedding=CHEAP_EMBEDDING) == []

    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        crawl_concurrently()
