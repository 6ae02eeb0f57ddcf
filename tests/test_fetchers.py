"""Process mode of the fetchers: worker processes fetch and prepare; this process keeps the
per-host limit, survives a worker's death with one recorded outcome per URL in flight, and
stops with one clear error when workers cannot start at all. The limits on requests in flight
(per host, then in all) are checked in thread mode too."""
import asyncio
import os
import re
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest
from aiohttp import web

from explorer.config import CrawlConfig
from explorer.crawl.crawler import Crawler, CrawlItem, open_cache
from explorer.records import UrlOutcome
from tests.crawl_fixtures import jpeg_bytes, serve


def cfg(**kw) -> CrawlConfig:
    return CrawlConfig(**(dict(image_size=64, min_side=16, pool="process", workers=1, retries=0) | kw))


def held_app(n: int = 4):
    """/i.jpg for i < n answer at once; /hold.jpg answers once `release` is set. `arrived` is set
    when /hold.jpg's request is in; `hits` counts requests by path."""
    bodies = {f"/{i}.jpg": jpeg_bytes(120, 90, seed=60 + i) for i in range(n)}
    bodies["/hold.jpg"] = jpeg_bytes(120, 90, seed=59)
    arrived, release, hits = threading.Event(), threading.Event(), {}

    async def handler(request):
        hits[request.path] = hits.get(request.path, 0) + 1
        if request.path == "/hold.jpg":
            arrived.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
        if request.path not in bodies:
            return web.Response(status=404)
        return web.Response(body=bodies[request.path], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", handler)
    return app, arrived, release, hits


async def wait_for(event: threading.Event, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not event.is_set():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


@contextmanager
def held_crawler(tmp_path):
    """A process-mode crawler (one worker) and a server whose /hold.jpg answers once released."""
    app, arrived, release, hits = held_app()
    with serve(app) as port:
        cache = open_cache(tmp_path, cfg())
        with Crawler.for_cache(cache, cfg(), allow=[f"127.0.0.1:{port}"]) as crawler:
            yield SimpleNamespace(crawler=crawler, cache=cache, base=f"http://127.0.0.1:{port}",
                                  arrived=arrived, release=release, hits=hits)
        cache.close()


async def crawl_held(h) -> asyncio.Task:
    """Start crawling /hold.jpg; return the crawl's task once the request is at the server."""
    task = asyncio.create_task(h.crawler.crawl([CrawlItem(f"{h.base}/hold.jpg")]))
    await wait_for(h.arrived)
    return task


def test_a_killed_worker_costs_only_its_urls_in_flight_and_is_replaced(tmp_path):
    with held_crawler(tmp_path) as h:
        async def kill_while_held():
            crawl = await crawl_held(h)
            (worker,) = h.crawler.fetcher.workers
            os.kill(worker.process.pid, signal.SIGKILL)
            return await crawl, worker.process.pid

        (lost,), pid = asyncio.run(kill_while_held())
        assert lost.outcome == UrlOutcome.WORKER_LOST and str(pid) in lost.reason and "-9" in lost.reason
        assert h.cache.db.outcome_counts() == {"worker_lost": 1}

        h.release.set()
        after = asyncio.run(h.crawler.crawl([CrawlItem(f"{h.base}/{i}.jpg") for i in range(4)]
                                            + [CrawlItem(f"{h.base}/hold.jpg")]))
        assert [a.outcome for a in after] == [UrlOutcome.OK] * 5  # a new worker; the lost URL fetched again
        (worker,) = h.crawler.fetcher.workers
        assert worker.process.pid != pid
        assert h.hits["/hold.jpg"] == 2 and h.cache.db.image_stats()[0] == 5


def test_workers_start_again_after_the_fork_server_and_a_worker_are_killed(tmp_path):
    from multiprocessing import forkserver

    with held_crawler(tmp_path) as h:
        h.release.set()
        first = asyncio.run(h.crawler.crawl([CrawlItem(f"{h.base}/0.jpg")]))
        assert [a.outcome for a in first] == [UrlOutcome.OK]
        (worker,) = h.crawler.fetcher.workers
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)  # the OOM killer, say
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(10)
        items = [CrawlItem(f"{h.base}/{i}.jpg") for i in (1, 2, 3)]
        again = asyncio.run(h.crawler.crawl(items))  # what went to the dead worker is lost...
        assert {a.outcome for a in again} <= {UrlOutcome.OK, UrlOutcome.WORKER_LOST}
        after = asyncio.run(h.crawler.crawl(items))  # ...and fetched by a new one, from a new server
        assert [a.outcome for a in after] == [UrlOutcome.OK] * 3
        (new,) = h.crawler.fetcher.workers
        assert new.process.pid != worker.process.pid and new.process.is_alive()


def test_a_cancelled_crawl_leaves_the_workers_usable(tmp_path):
    with held_crawler(tmp_path) as h:
        async def cancel_while_held():
            crawl = await crawl_held(h)
            crawl.cancel()
            with pytest.raises(asyncio.CancelledError):
                await crawl
            h.release.set()
            return await h.crawler.crawl([CrawlItem(f"{h.base}/0.jpg")])

        (after,) = asyncio.run(cancel_while_held())
        assert after.outcome == UrlOutcome.OK


def test_a_crawl_that_ends_leaves_a_concurrent_one_its_results(tmp_path):
    with held_crawler(tmp_path) as h:
        async def two_crawls():
            held = await crawl_held(h)
            (quick,) = await h.crawler.crawl([CrawlItem(f"{h.base}/0.jpg")])  # starts and ends meanwhile
            h.release.set()
            (slow,) = await asyncio.wait_for(held, 30)  # still read from its worker
            return quick, slow

        quick, slow = asyncio.run(two_crawls())
        assert (quick.outcome, slow.outcome) == (UrlOutcome.OK, UrlOutcome.OK)


def test_the_per_host_limit_holds_over_all_workers(tmp_path):
    in_flight, peak = [0], [0]

    async def handler(request):
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.05)  # the server is slow: requests pile up unless the client limits them
        in_flight[0] -= 1
        return web.Response(body=jpeg_bytes(120, 90, seed=int(request.match_info["i"])), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{i}.jpg", handler)
    with serve(app) as port:
        c = cfg(workers=2, per_host=2)
        cache = open_cache(tmp_path, c)
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            attempts = asyncio.run(crawler.crawl([CrawlItem(f"http://127.0.0.1:{port}/{i}.jpg") for i in range(12)]))
            assert len(crawler.fetcher.workers) == 2
    assert [a.outcome for a in attempts] == [UrlOutcome.OK] * 12
    assert peak[0] == 2
    cache.close()


class InFlight:
    """An app whose requests are held until `release` is set (for at most `hold_s`), then answer
    after `delay_s`, counting the requests in flight to it: now, at their peak, and, as each came,
    those in flight to `others`."""

    def __init__(self, delay_s: float = 0.0, hold_s: float = 0.0) -> None:
        self.now = self.peak = 0
        self.seen: list[int] = []    # for each request as it came: requests in flight to `others`
        self.others: list["InFlight"] = []
        self.release = threading.Event()
        self.delay_s, self.hold_s = delay_s, hold_s

    def app(self) -> web.Application:
        async def handler(request):
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.seen.append(sum(o.now for o in self.others))
            try:
                end = time.monotonic() + self.hold_s
                while time.monotonic() < end and not self.release.is_set():  # held until released (or hold_s)
                    await asyncio.sleep(0.01)
                await asyncio.sleep(self.delay_s)
            finally:
                self.now -= 1
            return web.Response(body=jpeg_bytes(120, 90, seed=int(request.match_info["i"])), content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/{i}.jpg", handler)
        return app


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_urls_waiting_for_a_busy_host_leave_the_crawls_slots_to_other_hosts(tmp_path, pool):
    # crawl.concurrency 4, per_host 2: six URLs of a host that holds its answers come first, then
    # two of another host. Those two are fetched while the first host's are held: the four URLs
    # waiting for the busy host hold none of the crawl's four slots.
    busy, other = InFlight(hold_s=20.0), InFlight()
    other.others = [busy]
    with serve(busy.app()) as busy_port, serve(other.app()) as other_port:
        c = cfg(pool=pool, workers=2 if pool == "process" else 1, per_host=2, concurrency=4)
        cache = open_cache(tmp_path, c)
        items = [CrawlItem(f"http://127.0.0.1:{busy_port}/{i}.jpg") for i in range(6)]
        items += [CrawlItem(f"http://127.0.0.1:{other_port}/{i}.jpg") for i in range(6, 8)]

        async def crawl():
            task = asyncio.create_task(crawler.crawl(items))
            end = time.monotonic() + 15
            while len(other.seen) < 2 and time.monotonic() < end and not task.done():
                await asyncio.sleep(0.01)
            while_held = (len(other.seen), busy.now)  # the other host's requests so far; the busy host's held
            busy.release.set()
            return while_held, await task

        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{busy_port}", f"127.0.0.1:{other_port}"]) as crawler:
            while_held, attempts = asyncio.run(crawl())
        cache.close()
    assert [a.outcome for a in attempts] == [UrlOutcome.OK] * 8
    assert while_held == (2, 2), "the other host's URLs waited behind the busy host's"
    assert busy.peak == 2 and other.peak <= 2


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_concurrency_bounds_the_requests_of_all_crawls_at_once(tmp_path, pool):
    # two crawls at once on one crawler (as a round's searches crawl their results), eight hosts:
    # crawl.concurrency=3 is for all of them together
    servers = [InFlight(delay_s=0.05) for _ in range(8)]
    for s in servers:
        s.others = servers
    with ExitStack() as stack:
        ports = [stack.enter_context(serve(s.app())) for s in servers]
        c = cfg(pool=pool, workers=2 if pool == "process" else 1, per_host=4, concurrency=3)
        cache = open_cache(tmp_path, c)
        urls = [f"http://127.0.0.1:{port}/{8 * i + k}.jpg" for i in range(4) for k, port in enumerate(ports)]

        async def both():
            return await asyncio.gather(crawler.crawl([CrawlItem(u) for u in urls[::2]]),
                                        crawler.crawl([CrawlItem(u) for u in urls[1::2]]))

        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{p}" for p in ports]) as crawler:
            attempts = [a for crawl in asyncio.run(both()) for a in crawl]
        cache.close()
    assert [a.outcome for a in attempts] == [UrlOutcome.OK] * 32
    assert max(n for s in servers for n in s.seen) == 3  # (seen: all requests in flight as one came, itself too)


class ExitWhenUnpickled:
    """Kills the worker that unpickles it, as a worker that cannot start at all dies."""

    def __reduce__(self):
        return os._exit, (3,)


def test_workers_that_cannot_start_stop_the_crawl_with_one_clear_error(tmp_path):
    cache = open_cache(tmp_path, cfg())
    items = [CrawlItem(f"http://127.0.0.1:9/{i}.jpg") for i in range(3)]
    error = None
    with Crawler.for_cache(cache, cfg(), allow=[ExitWhenUnpickled()]) as crawler:
        # each worker dies: its URLs are lost, to be fetched again; a crawl may start another
        # worker for a URL sent after the first died, so the third death may come in any crawl
        for _ in range(4):
            try:
                attempts = asyncio.run(crawler.crawl(items))
            except RuntimeError as e:
                error = str(e)
                break
            assert {a.outcome for a in attempts} == {UrlOutcome.WORKER_LOST}
    cache.close()
    assert error is not None, "the crawl went on after 3 workers in a row died at start"
    found = re.search(r"(\d+) fetch workers in a row died .*exit codes \[([\d, ]+)\]", error)
    assert found and int(found[1]) >= 3, error
    assert set(found[2].split(", ")) == {"3"}, error
    assert "crawl.pool=thread" in error


def test_a_garbled_message_from_a_worker_costs_its_jobs_and_the_worker_only():
    from multiprocessing import Pipe

    from explorer.crawl.fetchers import ProcessFetcher

    class FakeProcess:  # stands for the worker's process: records the kill
        pid, exitcode, killed = 4242, None, False

        def kill(self):
            self.killed, self.exitcode = True, -9

        def join(self, timeout=None):
            pass

    async def garble():
        fetcher = ProcessFetcher(cfg(), [], None)
        ours, theirs = Pipe(duplex=True)
        worker = SimpleNamespace(conn=ours, process=FakeProcess(), jobs={7}, delivered=1, alive=True,
                                 unwatch=lambda: None)
        future = asyncio.get_running_loop().create_future()
        fetcher._jobs[7] = ("http://127.0.0.1:9/7.jpg", future)
        theirs.send_bytes(b"not a pickle")
        fetcher._readable(worker)  # must not raise
        return worker, await asyncio.wait_for(future, 5)

    worker, fetched = asyncio.run(garble())
    assert worker.process.killed and not worker.alive
    assert fetched.result.outcome == UrlOutcome.WORKER_LOST and fetched.result.url == "http://127.0.0.1:9/7.jpg"


def test_a_worker_that_cannot_be_forked_stops_the_crawl_with_one_clear_error(tmp_path, monkeypatch):
    from explorer.crawl import worker_server
    class NoForkServer:  # as when the fork server died at start (a main script that raises on import)
        def Pipe(self, duplex=True):
            from multiprocessing import Pipe
            return Pipe(duplex)

        def Process(self, **kw):
            return SimpleNamespace(start=lambda: (_ for _ in ()).throw(ConnectionRefusedError(111, "refused")))

    cache = open_cache(tmp_path, cfg())
    with Crawler.for_cache(cache, cfg(), allow=[]) as crawler:
        monkeypatch.setattr(worker_server, "context", lambda: NoForkServer())
        error = r"cannot start a fetch worker \(ConnectionRefusedError.*crawl.pool=thread"
        with pytest.raises(RuntimeError, match=error):
            asyncio.run(crawler.crawl([CrawlItem("http://127.0.0.1:9/0.jpg")]))
    cache.close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


MAIN_SCRIPT = """
import sys
with open(sys.argv[1], "a") as log:  # a line each time this script runs
    log.write(__name__ + "\\n")
if __name__ == "__main__":
    import asyncio
    from explorer.config import CrawlConfig
    from explorer.crawl.fetchers import ProcessFetcher
    fetcher = ProcessFetcher(CrawlConfig(workers=2, retries=0), [], None)
    async def fetch_some():  # refused by the guard in the workers: nothing is connected to
        async with fetcher.session() as fetch:
            return await asyncio.gather(*(fetch(f"http://127.0.0.1:9/{i}.jpg") for i in range(4)))
    outcomes = {f.result.outcome.value for f in asyncio.run(fetch_some())}
    print(len(fetcher.workers), *sorted(outcomes))
    fetcher.close()
"""


@pytest.mark.parametrize("run_as", ["path", "module"])
def test_the_workers_do_not_run_the_command_s_script_again(tmp_path, run_as):
    """multiprocessing runs the parent's __main__ in each process it starts; the fork server
    stands one in, so no worker imports `explore`'s script (typer, rich, pydantic) again."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "fetch_main.py").write_text(MAIN_SCRIPT)
    log = tmp_path / "runs.log"
    root = Path(__file__).resolve().parent.parent
    how = [str(tmp_path / "fetch_main.py")] if run_as == "path" else ["-m", "fetch_main"]
    proc = subprocess.run([sys.executable, *how, str(log)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "forbidden_address"]  # two workers started and answered
    assert log.read_text().split() == ["__main__"]  # the command's run only


def test_when_explore_fetch_is_killed_its_workers_and_fork_server_exit(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.proc_fixtures import descendants

    app, arrived, release, _ = held_app()
    with serve(app) as port:
        urls = tmp_path / "urls.txt"
        urls.write_text(f"http://127.0.0.1:{port}/hold.jpg\n")
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.Popen([sys.executable, str(root / "cli.py"), "fetch", str(urls), "--cache-dir",
                                 str(tmp_path / "cache"), "--allow", f"127.0.0.1:{port}", "--set", "crawl.workers=2"],
                                cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert arrived.wait(60), "the held request never came"
            tree = set(descendants(proc.pid))
            assert len(tree) >= 3  # the fork server and two workers (and multiprocessing's resource tracker)
            proc.kill()  # the parent only: the OOM killer, say
            proc.wait(10)
            deadline = time.monotonic() + 20
            while any(_running(p) for p in tree) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not [p for p in tree if _running(p)], "processes outlived explore fetch"
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
