"""URL -> downloaded and prepared image, in this process or in worker processes (DESIGN.md §2).

A fetcher's `session()` yields `fetch(url) -> Fetched`: the FetchResult (its body dropped) and
what `images.prepare` made of the body. `crawl.pool` picks one of two:

- "process" (`ProcessFetcher`, the default): `crawl.workers` processes (0 = one per core),
  forked from a fork server (explorer/worker_server.py), each with its own event loop and
  Downloader. A decoder that crashes on hostile bytes takes down one worker, not the crawl,
  and neither the HTTP client nor the Python glue around the decoders waits on this
  process's GIL. Only the stored JPEG and its signature come back, never the downloaded
  bytes, and this process's event loop reads them (no reader threads). The crawl's own event
  loop (search, dedup, the database) does no image work.
- "thread" (`LocalFetcher`): this process's event loop downloads; threads prepare. No worker
  processes and no pickling: ~5% less CPU per URL on bench/crawl.py's workload, but one
  process's GIL, and a decoder crash ends the run.

In process mode this process keeps `per_host` and the politeness delay for the first hop of
every URL, over all workers; a redirect to another host is limited by the worker that follows
it. A worker that dies (a decoder crashing on hostile bytes, the OOM killer) costs only the URLs
it had in flight: they get `worker_lost`, which a later crawl fetches again, and a new worker
takes its place.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np

from explorer import images, worker_server
from explorer.allocator import keep_freed_memory
from explorer.config import CrawlConfig
from explorer.downloader import Downloader, HostPacer
from explorer.records import Candidate, FetchResult, Outcome

Prepared = tuple[Candidate, np.ndarray] | images.Rejection  # (image, cheap vector [768]) or why not
# A worker prepares JPEGs up to this size on its own loop, not in its thread: it has a core's
# work either way, and the handoff and the GIL contention cost ~12% of the crawl's rate
# (bench/crawl.py); anything bigger or slower to decode goes to the thread, so that the
# worker's loop is never held for long while its other downloads wait.
INLINE_JPEG_BYTES = 2_000_000
FAILED_STARTS = 3  # workers in a row that die before delivering anything: a broken setup, not bad input


@dataclass
class Fetched:
    """One URL's fetch (body dropped) and, when a body came, what preparing it made."""

    result: FetchResult
    prepared: Prepared | None = None
    nbytes: int = 0                       # bytes downloaded


FetchFn = Callable[[str], Awaitable[Fetched]]


def prepare_job(body: bytes, cfg: CrawlConfig) -> Prepared:
    """bytes -> (Candidate, cheap vector) | Rejection. Whatever a decoder does with hostile
    bytes, the item gets an outcome and the crawl goes on."""
    try:
        return images.prepare_with_embedding(body, cfg)
    except Exception as e:  # noqa: BLE001 - a decoder failure we did not foresee is still bad input
        return images.Rejection(Outcome.CORRUPT, f"unexpected {type(e).__name__}: {str(e)[:200]}")


async def fetch_body(downloader: Downloader, url: str, cfg: CrawlConfig, allow_files: bool) -> FetchResult:
    """HTTP(S) through the guarded downloader; file:// (the local corpus engine) only when allowed."""
    if urlsplit(url).scheme.lower() != "file":
        return await downloader.fetch(url)
    if not allow_files:
        return FetchResult(url=url, outcome=Outcome.BAD_URL, reason="file:// URLs are not allowed here")
    path = Path(url2pathname(urlsplit(url).path))
    try:
        if path.stat().st_size > cfg.max_bytes:
            return FetchResult(url=url, outcome=Outcome.TOO_LARGE, reason=f"file over {cfg.max_bytes} bytes")
        return FetchResult(url=url, body=await asyncio.to_thread(path.read_bytes), status=200, final_url=url)
    except OSError as e:
        return FetchResult(url=url, outcome=Outcome.HTTP_ERROR, reason=f"{type(e).__name__}: {e}"[:300])


async def fetch_and_prepare(downloader: Downloader, url: str, cfg: CrawlConfig, allow_files: bool,
                            pool: Executor, inline_jpeg_bytes: int = 0) -> Fetched:
    """Fetch, then prepare in `pool`; a JPEG of at most `inline_jpeg_bytes` is prepared right here
    on the loop instead. DCT scaling bounds a JPEG's decode by its bytes (2 MB: ~35 ms at most
    here, for 62 megapixels); other formats can hold many pixels in few bytes."""
    result = await fetch_body(downloader, url, cfg, allow_files)
    if result.body is None:
        return Fetched(result)
    body, result.body = result.body, None
    if len(body) <= inline_jpeg_bytes and images.sniff(body) == "JPEG":
        prepared = prepare_job(body, cfg)
    else:
        prepared = await asyncio.get_running_loop().run_in_executor(pool, prepare_job, body, cfg)
    return Fetched(result, prepared, len(body))


def make_fetcher(cfg: CrawlConfig, allow: list[str], allow_files: bool) -> "LocalFetcher | ProcessFetcher":
    if cfg.pool == "thread":
        return LocalFetcher(cfg, allow, allow_files)
    if cfg.pool == "process":
        return ProcessFetcher(cfg, allow, allow_files)
    raise ValueError(f"crawl.pool must be thread or process, not {cfg.pool!r}")


class LocalFetcher:
    """Downloads on this process's event loop, prepares in `workers` threads (0 = 2 per core:
    decode, resize and encode release the GIL; the extra threads fill the gaps where one holds it)."""

    def __init__(self, cfg: CrawlConfig, allow: list[str], allow_files: bool) -> None:
        self.cfg, self.allow, self.allow_files = cfg, allow, allow_files
        keep_freed_memory()  # (for this whole process: the preparing threads' buffers)
        self.pool = ThreadPoolExecutor(cfg.workers or 2 * len(os.sched_getaffinity(0)), thread_name_prefix="prepare")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FetchFn]:
        async with Downloader(self.cfg, self.allow) as downloader:
            yield lambda url: fetch_and_prepare(downloader, url, self.cfg, self.allow_files, self.pool)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


# -- process mode -----------------------------------------------------------------------------
def worker_main(conn, cfg: CrawlConfig, allow: list[str], allow_files: bool) -> None:
    """A worker process: (job, url) messages in, (job, Fetched) out, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    keep_freed_memory()
    asyncio.run(_serve(conn, cfg, allow, allow_files))


async def _serve(conn, cfg: CrawlConfig, allow: list[str], allow_files: bool) -> None:
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task] = set()

    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:  # for what is slow to decode
        async with Downloader(cfg, allow) as downloader:
            async def one(job: int, url: str) -> None:
                try:
                    fetched = await fetch_and_prepare(downloader, url, cfg, allow_files, pool, INLINE_JPEG_BYTES)
                except Exception as e:  # noqa: BLE001 - a bug must not leave the parent waiting forever
                    fetched = Fetched(FetchResult(url=url, outcome=Outcome.CONNECTION_ERROR,
                                                  reason=f"unexpected {type(e).__name__} in the fetch worker: {e}"[:300]))
                try:
                    conn.send((job, fetched))
                except OSError:
                    closed.set()

            def readable() -> None:
                try:
                    while conn.poll():
                        message = conn.recv()
                        if message is None:  # the parent is closing
                            raise EOFError
                        job, url = message
                        task = loop.create_task(one(job, url))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except (EOFError, OSError):
                    loop.remove_reader(conn.fileno())
                    closed.set()

            loop.add_reader(conn.fileno(), readable)
            await closed.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class _Worker:
    """One worker process and this end of its pipe, which the event loop of the fetch session
    reads (no thread: a reader thread per worker cost GIL hand-offs and a loop wake-up per result)."""

    def __init__(self, owner: "ProcessFetcher") -> None:
        # forked by the fork server (explorer/worker_server.py), never by this process: forking
        # one that runs an event loop and threads is unsafe
        ctx = worker_server.context()
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(child, owner.cfg, owner.allow, owner.allow_files),
                                   name="explore-fetch", daemon=True)
        try:
            self.process.start()
        except BaseException:
            self.conn.close()
            raise
        finally:
            child.close()
        self.jobs: set[int] = set()
        self.alive = True
        self.delivered = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop that reads this worker's results

    def watch(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[["_Worker"], None]) -> None:
        if self.loop is not loop:
            self.unwatch()
            loop.add_reader(self.conn.fileno(), on_readable, self)
            self.loop = loop

    def unwatch(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.conn.fileno())
        self.loop = None

    def stop(self, timeout: float = 5.0) -> None:
        self.alive = False
        self.unwatch()
        try:
            self.conn.send(None)  # the worker exits
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()


class ProcessFetcher:
    """Fetch and prepare in `workers` processes (0 = one per core); see the module docstring.
    Everything here runs on the event loop of the current session (or in close(), after it)."""

    def __init__(self, cfg: CrawlConfig, allow: list[str], allow_files: bool) -> None:
        self.cfg, self.allow, self.allow_files = cfg, list(allow), allow_files
        self.n_workers = cfg.workers or len(os.sched_getaffinity(0))
        self.workers: list[_Worker] = []
        self._jobs: dict[int, tuple[str, asyncio.Future]] = {}  # job -> (its URL, the future its fetch awaits)
        self._ids = itertools.count()
        self._failed_starts: list[int | None] = []  # exit codes of workers that died delivering nothing
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions = 0                     # sessions open on self._loop
        self._host_slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}  # host -> (slots, [users])
        self._pacer = HostPacer(cfg.politeness_delay_s)
        worker_server.start()  # its imports overlap the caller's set-up; the workers start at the first fetch

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FetchFn]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # asyncio primitives belong to one loop
            if self._sessions:
                raise RuntimeError("a ProcessFetcher serves one event loop at a time")
            self._loop, self._host_slots = loop, {}
        self.workers = [w for w in self.workers if w.alive]
        for worker in self.workers:
            worker.watch(loop, self._readable)
        self._sessions += 1
        try:
            yield self.fetch
        finally:
            self._sessions -= 1
            if not self._sessions:  # results that come in later are read by the next session
                for worker in self.workers:
                    worker.unwatch()

    async def fetch(self, url: str) -> Fetched:
        host = urlsplit(url).netloc.lower()
        slots, users = self._host_slots.setdefault(host, (asyncio.Semaphore(self.cfg.per_host), [0]))
        users[0] += 1
        try:
            async with slots:
                return await self._dispatch(host, url)
        finally:
            users[0] -= 1
            if not users[0]:  # forget idle hosts: a long crawl meets millions
                self._host_slots.pop(host, None)

    async def _dispatch(self, host: str, url: str) -> Fetched:
        await self._pacer.wait(host)
        worker = self._pick()
        job = next(self._ids)
        future = self._loop.create_future()
        self._jobs[job] = (url, future)
        worker.jobs.add(job)
        try:
            worker.conn.send((job, url))
        except (OSError, ValueError):  # it died since: reading its end answers the job
            pass
        try:
            return await future
        finally:
            self._jobs.pop(job, None)
            worker.jobs.discard(job)

    def _pick(self) -> _Worker:
        """The live worker with the fewest jobs, starting workers up to n."""
        self.workers = [w for w in self.workers if w.alive]
        if len(self._failed_starts) >= FAILED_STARTS:
            raise RuntimeError(f"{len(self._failed_starts)} fetch workers in a row died before fetching anything "
                               f"(exit codes {self._failed_starts}; their errors are above); "
                               "crawl.pool=thread fetches in this process instead")
        while len(self.workers) < self.n_workers:
            try:
                worker = _Worker(self)
            except (OSError, EOFError) as e:  # the fork server could not start, or died (its error is above)
                raise RuntimeError(f"cannot start a fetch worker ({type(e).__name__}: {e}); "
                                   "crawl.pool=thread fetches in this process instead") from e
            worker.watch(self._loop, self._readable)
            self.workers.append(worker)
        return min(self.workers, key=lambda w: len(w.jobs))

    def _readable(self, worker: _Worker) -> None:
        """The worker's pipe has data: every result in it, or its end (EOF: the worker died)."""
        try:
            while worker.conn.poll():
                job, fetched = worker.conn.recv()
                worker.delivered += 1
                self._failed_starts.clear()
                _, future = self._jobs.get(job, (None, None))
                if future is not None and not future.done():  # else cancelled, or from an earlier session
                    future.set_result(fetched)
        except (EOFError, OSError):
            self._lost(worker)
        except Exception:  # noqa: BLE001 - a message that does not unpickle: trust nothing more from it
            worker.process.kill()
            self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        """The worker's pipe closed: answer its jobs in flight, and let _pick replace it."""
        worker.unwatch()
        worker.alive = False
        worker.process.join(1.0)  # it has closed its end: it is exiting
        code = worker.process.exitcode
        if worker.delivered == 0:
            self._failed_starts.append(code)
        reason = (f"the fetch worker (pid {worker.process.pid}) died with exit code {code} "
                  "while this URL was in flight")
        for job in worker.jobs:
            url, future = self._jobs.get(job, ("", None))
            if future is not None and not future.done():
                future.set_result(Fetched(FetchResult(url=url, outcome=Outcome.WORKER_LOST, reason=reason)))
        worker.conn.close()

    def close(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.stop()
