"""URL -> downloaded and prepared image, in this process or in worker processes.

A fetcher's `session()` yields `fetch(url) -> Fetched`: the FetchResult (its body dropped) and
what `images.prepare` made of the body. `crawl.pool` picks one of three:

- "process" (`ProcessFetcher`, the default): `crawl.workers` processes (0 = one per core),
  forked from a fork server (explorer/crawl/worker_server.py), each with its own event loop and
  Downloader. A decoder that crashes on hostile bytes takes down one worker, not the crawl,
  and neither the HTTP client nor the Python glue around the decoders waits on this
  process's GIL. Only the stored JPEG and its signature come back, never the downloaded
  bytes, and this process's event loop reads them (no reader threads). The crawl's own event
  loop (search, dedup, the database) does no image work.
- "thread" (`LocalFetcher`): this process's event loop downloads; threads prepare. No worker
  processes and no pickling: ~5% less CPU per URL on bench/crawl.py's workload, but one
  process's GIL, and a decoder crash ends the run.
- "ray" (`RayFetcher`, explorer/crawl/ray_fetcher.py, with the optional `ray` package): Ray actors
  on a cluster fetch and prepare, and write the stored files into the shared cache directory
  themselves; this process still keeps the database and the index (their one writer).

In every mode this process keeps `per_host`, `concurrency` and the politeness delay for the
first hop of every URL, over all workers (`HostGate`); a redirect to another host is limited by
the worker that follows it. A worker that dies (a decoder crashing on hostile bytes, the OOM killer) costs only the URLs
it had in flight: they get `worker_lost`, which a later crawl fetches again, and a new worker
takes its place.

Each image's preparation has a deadline, `crawl.prepare_timeout_s` of CPU (a few hundred kB of
progressive JPEG can hold a core for minutes). In a worker a watchdog thread reads the CPU
clock of the thread preparing (`PrepareClock`): past the deadline it reports `decode_timeout`
for that URL (final: never fetched again) and SIGKILLs its own process, as C code sees no
Python exception; this process sends the worker's other URLs to another worker, once, and a
new worker takes its place. The worker judges, not this process: it reads its threads' clocks
directly, and costs no message per URL. In thread mode nothing can stop a thread: the crawl
stops waiting at the deadline and records `decode_timeout`, and the thread runs on until its
decode ends, a preparing thread lost meanwhile (and `explore` waits for it at exit).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Hashable
from urllib.parse import urlsplit

import numpy as np

from explorer.crawl import images, localfile, worker_server
from explorer.crawl.allocator import keep_freed_memory
from explorer.config import CrawlConfig
from explorer.crawl.downloader import Downloader, HostPacer, host_key
from explorer.records import Candidate, FetchResult, UrlOutcome

Prepared = tuple[Candidate, np.ndarray] | images.Rejection  # (image, cheap vector [768]) or why not
# A worker prepares JPEGs up to this size on its own loop, not in its thread: it has a core's
# work either way, and the handoff and the GIL contention would slow the crawl; anything bigger
# or slower to decode goes to the thread, so that the worker's loop is never held for long
# while its other downloads wait.
INLINE_JPEG_BYTES = 2_000_000
FAILED_STARTS = 3  # workers in a row that die before delivering anything: a broken setup, not bad input
START_TRIES = 3    # tries to start one worker before the process pool is given up (see _pick)
START_RETRY_S = 0.2  # the wait before the next try, times the tries so far


@dataclass
class Fetched:
    """One URL's fetch (body dropped) and, when a body came, what preparing it made."""

    result: FetchResult
    prepared: Prepared | None = None
    nbytes: int = 0                       # bytes downloaded
    stored: bool = False                  # a Ray worker wrote the image's file into the cache, which lacked it


FetchFn = Callable[[str], Awaitable[Fetched]]


def prepare_job(body: bytes, cfg: CrawlConfig) -> Prepared:
    """bytes -> (Candidate, cheap vector) | Rejection. Whatever a decoder does with hostile
    bytes, the item gets an outcome and the crawl goes on."""
    try:
        return images.prepare_with_embedding(body, cfg)
    except Exception as e:  # noqa: BLE001 - a decoder failure we did not foresee is still bad input
        return images.Rejection(UrlOutcome.CORRUPT, f"unexpected {type(e).__name__}: {str(e)[:200]}")


class PrepareClock:
    """The CPU time each image in preparation has used so far, readable from another thread.

    The preparing thread notes its own CPU clock and its reading as it starts (`run`); a
    watcher reads that clock later (`used`, `over`). A thread's CPU time counts only what it
    computed, not the time it waited for a core: a busy machine does not make a good image late.
    """

    def __init__(self) -> None:
        self._busy: dict[Hashable, tuple[int, float]] = {}  # key -> (its thread's CPU clock, reading at start)

    def run(self, key: Hashable, fn: Callable, *args):
        clock = time.pthread_getcpuclockid(threading.get_ident())
        self._busy[key] = (clock, time.clock_gettime(clock))
        try:
            return fn(*args)
        finally:
            del self._busy[key]

    def used(self, key: Hashable) -> float | None:
        """CPU seconds `key`'s preparation has used, or None when it is not running."""
        entry = self._busy.get(key)
        if entry is None:
            return None
        clock, start = entry
        try:
            return time.clock_gettime(clock) - start
        except OSError:  # its thread has just ended
            return None

    def over(self, budget_s: float) -> list[tuple[Hashable, float]]:
        """(key, CPU seconds used) of every preparation past `budget_s`."""
        return [(key, used) for key in list(self._busy) if (used := self.used(key) or 0.0) > budget_s]


def past_deadline(used_s: float, cfg: CrawlConfig) -> images.Rejection:
    return images.Rejection(UrlOutcome.DECODE_TIMEOUT, f"preparing the image used {used_s:.1f} s of CPU, "
                                                    f"over crawl.prepare_timeout_s={cfg.prepare_timeout_s:g}")


async def within_deadline(clock: PrepareClock, key: Hashable, future: asyncio.Future, cfg: CrawlConfig) -> Prepared:
    """`future`'s preparation, or decode_timeout once it has used crawl.prepare_timeout_s of CPU.
    Its thread goes on (nothing stops a thread inside C code) and its result is dropped."""
    left = cfg.prepare_timeout_s  # CPU time never outruns wall time: no need to look sooner
    while not (await asyncio.wait({future}, timeout=left))[0]:
        used = clock.used(key) or 0.0  # (None: still queued for a thread)
        if used > cfg.prepare_timeout_s:
            return past_deadline(used, cfg)
        left = max(0.01, cfg.prepare_timeout_s - used)
    return future.result()


async def fetch_body(downloader: Downloader, url: str, cfg: CrawlConfig, corpus_root: Path | None) -> FetchResult:
    """HTTP(S) through the guarded downloader; file:// (the local corpus engine) from under
    `corpus_root` only (explorer/crawl/localfile.py), none when it is None."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # a malformed authority ("http://[x"): the downloader records a bad URL
        scheme = ""
    if scheme != "file":
        return await downloader.fetch(url)
    return await asyncio.to_thread(localfile.read_file_url, url, corpus_root, cfg.max_bytes,
                                   cfg.corpus_allow_outside)


async def fetch_and_prepare(downloader: Downloader, url: str, cfg: CrawlConfig, corpus_root: Path | None,
                            pool: Executor, clock: PrepareClock, key: Hashable, inline_jpeg_bytes: int = 0,
                            wait_within_deadline: bool = False) -> Fetched:
    """Fetch, then prepare in `pool`, timed by `clock` under `key`; a JPEG of at most
    `inline_jpeg_bytes` is prepared right here on the loop instead. DCT scaling bounds a plain
    JPEG's decode by its bytes (2 MB: ~35 ms at most here, for 62 megapixels); other formats can
    hold many pixels in few bytes, and a progressive JPEG any number of scans, which is what the
    deadline is for: with `wait_within_deadline` this waits no longer than that (thread mode);
    a fetch worker has a watchdog instead, which kills the whole process."""
    result = await fetch_body(downloader, url, cfg, corpus_root)
    if result.body is None:
        return Fetched(result)
    body, result.body = result.body, None
    if len(body) <= inline_jpeg_bytes and images.sniff(body) == "JPEG":
        prepared = clock.run(key, prepare_job, body, cfg)
    else:
        future = asyncio.get_running_loop().run_in_executor(pool, clock.run, key, prepare_job, body, cfg)
        prepared = await (within_deadline(clock, key, future, cfg) if wait_within_deadline else future)
    return Fetched(result, prepared, len(body))


class HostGate:
    """The crawl's limits on requests in flight, kept by this process over all its workers:
    per host (crawl.per_host) and all hosts together (crawl.concurrency), with the politeness
    delay, for the first hop of every URL; and the resend-once of a URL whose worker was killed
    over another URL's deadline.

    A URL takes its host's slot first, then one of the crawl's: a URL waiting for a busy host
    holds none of the crawl's slots, so that URLs of other hosts go ahead (taken the other way
    round, a list with a few slow hosts filled every slot with URLs queued behind them). Its
    semaphores belong to one event loop: `bind` each session's."""

    def __init__(self, cfg: CrawlConfig) -> None:
        self.per_host, self.concurrency = cfg.per_host, cfg.concurrency
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}  # host -> (slots, [users])
        self._in_flight = asyncio.Semaphore(self.concurrency)
        self._pacer = HostPacer(cfg.politeness_delay_s)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            self._loop, self._slots = loop, {}
            self._in_flight = asyncio.Semaphore(self.concurrency)

    async def send(self, url: str, run: Callable[[str, bool], Awaitable[Fetched | None]]) -> Fetched:
        """`run(url, second_try)` within the URL's host limits. It returns None when its worker was
        killed over another URL's deadline (not this URL's fault): then it runs once more."""
        host = host_key(url)  # never raises: a URL list holds anything
        slots, users = self._slots.setdefault(host, (asyncio.Semaphore(self.per_host), [0]))
        users[0] += 1
        try:
            async with slots:
                await self._pacer.wait(host)
                async with self._in_flight:
                    fetched = await run(url, False)
                if fetched is None:
                    await self._pacer.wait(host)
                    async with self._in_flight:
                        fetched = await run(url, True)
                return fetched
        finally:
            users[0] -= 1
            if not users[0]:  # forget idle hosts: a long crawl meets millions
                self._slots.pop(host, None)


class LocalFetcher:
    """Downloads on this process's event loop, prepares in `workers` threads (0 = 2 per core:
    decode, resize and encode release the GIL; the extra threads fill the gaps where one holds it)."""

    def __init__(self, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None) -> None:
        self.cfg, self.allow, self.corpus_root = cfg, allow, corpus_root
        keep_freed_memory()  # (for this whole process: the preparing threads' buffers)
        self.pool = ThreadPoolExecutor(cfg.workers or 2 * len(os.sched_getaffinity(0)), thread_name_prefix="prepare")
        self.clock = PrepareClock()
        self._gate = HostGate(cfg)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FetchFn]:
        self._gate.bind(asyncio.get_running_loop())
        async with Downloader(self.cfg, self.allow) as downloader:
            async def run(url: str, second_try: bool) -> Fetched:
                return await fetch_and_prepare(downloader, url, self.cfg, self.corpus_root, self.pool, self.clock,
                                               object(), wait_within_deadline=True)

            yield lambda url: self._gate.send(url, run)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)  # a thread past its deadline may run on for minutes


# -- process mode -----------------------------------------------------------------------------
def worker_main(conn, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None) -> None:
    """A worker process: (job, url) messages in, (job, Fetched) out, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    server = sys.modules.get("explorer.crawl.worker_env")  # the fork server's preload (absent when spawned)
    if server is not None and server.SERVER_PID != os.getpid():
        worker_server.die_with_parent(server.SERVER_PID)
    keep_freed_memory()
    asyncio.run(_serve(conn, cfg, allow, corpus_root))


def watch_deadline(clock: PrepareClock, budget_s: float, overdue: Callable[[Hashable, float], None],
                   stop: threading.Event) -> None:
    """A worker's watchdog thread: `overdue(job, CPU seconds)` for a preparation past its budget.
    It needs the GIL only between checks: the decoders release it while they work."""
    tick = min(0.1, budget_s / 4)
    while not stop.wait(tick):
        for job, used in clock.over(budget_s):
            overdue(job, used)


async def _serve(conn, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None) -> None:
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task] = set()
    urls: dict[int, str] = {}  # job -> URL, of the jobs in flight
    clock, stop = PrepareClock(), threading.Event()
    sending = threading.Lock()  # the loop and the watchdog both write to the pipe

    def send(message) -> None:
        with sending:
            conn.send(message)

    def overdue(job: int, used: float) -> None:
        """Past the deadline: say so for this job, then die at once (SIGKILL, as C code sees no
        exception); the parent sends this worker's other jobs to another worker."""
        try:
            send((job, Fetched(FetchResult(url=urls.get(job, "")), past_deadline(used, cfg))))
        finally:
            os.kill(os.getpid(), signal.SIGKILL)

    watchdog = threading.Thread(target=watch_deadline, args=(clock, cfg.prepare_timeout_s, overdue, stop),
                                name="prepare-deadline", daemon=True)
    watchdog.start()
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:  # for what is slow to decode
        async with Downloader(cfg, allow) as downloader:
            async def one(job: int, url: str) -> None:
                urls[job] = url
                try:
                    fetched = await fetch_and_prepare(downloader, url, cfg, corpus_root, pool, clock, job,
                                                      INLINE_JPEG_BYTES)
                except Exception as e:  # noqa: BLE001 - a bug must not leave the parent waiting forever
                    fetched = Fetched(FetchResult(url=url, outcome=UrlOutcome.CONNECTION_ERROR,
                                                  reason=f"unexpected {type(e).__name__} in the fetch worker: {e}"[:300]))
                finally:
                    urls.pop(job, None)
                try:
                    send((job, fetched))
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
    stop.set()


def is_past_deadline(fetched: Fetched) -> bool:
    return isinstance(fetched.prepared, images.Rejection) and fetched.prepared.outcome == UrlOutcome.DECODE_TIMEOUT


class _Worker:
    """One worker process and this end of its pipe, which the event loop of the fetch session
    reads (no thread: a reader thread per worker cost GIL hand-offs and a loop wake-up per result)."""

    def __init__(self, owner: "ProcessFetcher") -> None:
        # forked by the fork server (explorer/crawl/worker_server.py), never by this process: forking
        # one that runs an event loop and threads is unsafe
        ctx = worker_server.context()
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(child, owner.cfg, owner.allow, owner.corpus_root),
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

    def __init__(self, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None) -> None:
        self.cfg, self.allow, self.corpus_root = cfg, list(allow), corpus_root
        self.n_workers = cfg.workers or len(os.sched_getaffinity(0))
        self.workers: list[_Worker] = []
        self._jobs: dict[int, tuple[str, asyncio.Future]] = {}  # job -> (its URL, the future its fetch awaits)
        self._ids = itertools.count()
        self._failed_starts: list[int | None] = []  # exit codes of workers that died delivering nothing
        self._second_tries: set[int] = set()   # jobs sent again after their worker was killed for another's deadline
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions = 0                     # sessions open on self._loop
        self._gate = HostGate(cfg)
        worker_server.start()  # its imports overlap the caller's set-up; the workers start at the first fetch

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FetchFn]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # asyncio primitives belong to one loop
            if self._sessions:
                raise RuntimeError("a ProcessFetcher serves one event loop at a time")
            self._loop = loop
            self._gate.bind(loop)
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
        return await self._gate.send(url, self._run)

    async def _run(self, url: str, second_try: bool) -> Fetched | None:
        """`url` sent to a worker: its Fetched, or None when that worker was killed over another
        job's deadline (first tries only; a second try gets worker_lost)."""
        worker = self._pick()
        job = next(self._ids)
        future = self._loop.create_future()
        self._jobs[job] = (url, future)
        if second_try:
            self._second_tries.add(job)
        worker.jobs.add(job)
        try:
            worker.conn.send((job, url))
        except (OSError, ValueError):  # it died since: reading its end answers the job
            pass
        try:
            return await future
        finally:
            self._jobs.pop(job, None)
            self._second_tries.discard(job)
            worker.jobs.discard(job)

    def _pick(self) -> _Worker:
        """The live worker with the fewest jobs, starting workers up to n."""
        self.workers = [w for w in self.workers if w.alive]
        if len(self._failed_starts) >= FAILED_STARTS:
            raise RuntimeError(f"{len(self._failed_starts)} fetch workers in a row died before fetching anything "
                               f"(exit codes {self._failed_starts}; their errors are above); "
                               "crawl.pool=thread fetches in this process instead")
        while len(self.workers) < self.n_workers:
            for attempt in range(START_TRIES):
                try:
                    worker = _Worker(self)
                    break
                except (OSError, EOFError) as e:  # the fork server could not start, or died (its error is above)
                    if attempt + 1 == START_TRIES:
                        raise RuntimeError(f"cannot start a fetch worker ({type(e).__name__}: {e}); "
                                           "crawl.pool=thread fetches in this process instead") from e
                    # a fork server killed a moment ago may not be reaped yet: multiprocessing then
                    # takes it for alive and its socket refuses; once reaped, it starts a new one
                    time.sleep(START_RETRY_S * (attempt + 1))
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
                if is_past_deadline(fetched):  # its watchdog is killing it: make sure, and move its other jobs
                    worker.process.kill()
                    self._lost(worker, resend=True)
                    return
        except (EOFError, OSError):
            self._lost(worker)
        except Exception:  # noqa: BLE001 - a message that does not unpickle: trust nothing more from it
            worker.process.kill()
            self._lost(worker)

    def _lost(self, worker: _Worker, resend: bool = False) -> None:
        """The worker's pipe closed: answer its jobs in flight, and let _pick replace it. With
        `resend` (it was killed over one job's deadline) the others are sent again, once.
        A worker killed so has delivered that job's decode_timeout: not a failed start."""
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
                again = resend and job not in self._second_tries
                future.set_result(None if again else
                                  Fetched(FetchResult(url=url, outcome=UrlOutcome.WORKER_LOST, reason=reason)))
        worker.conn.close()

    def close(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.stop()
