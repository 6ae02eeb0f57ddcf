"""crawl.pool=ray: Ray actors fetch and prepare, on this machine or on a cluster.

`ray` is an optional extra (`pip install -e '.[ray]'`); this module is imported only when
crawl.pool=ray. Each actor (`FetchActor`; crawl.workers of them, 0 = one per CPU of the
cluster) does what a fetch worker process does (explorer/crawl/fetchers.py): the guarded
Downloader on its own event loop, `fetch_and_prepare` with its threads timed by a
`PrepareClock`. It also writes each prepared image's file into the cache directory, which
every node must see at the same path (content-addressed, tmp + rename: workers cannot collide).
The Candidate and its signature still come back, so that this process can judge the image,
count the file under the cache cap and write it itself where a worker could not.

This process keeps the per-host limits and the politeness delay (`HostGate`) and stays the one
writer of the database and the index; it removes a file a worker wrote for an image that it
then rejects (a near duplicate, a test leak), unless the cache holds that sha256.

Outcomes are those of process mode:
- an image's preparation past crawl.prepare_timeout_s of CPU: the actor answers
  `decode_timeout` at the deadline (its thread runs on inside the decoder), and this process
  kills that actor and starts another; its other URLs in flight are sent again, once.
- an actor lost to the cluster (its process or node died: RayActorError): its URLs in flight
  get `worker_lost`, fetched again by a later crawl, and a new actor takes its place. Actors
  that die one after another before delivering anything (a node without `explore` installed)
  stop the crawl with one clear error.

crawl.ray_address: "" starts a local Ray for this process (this machine's loopback only, no
dashboard, no usage report), stopped at close; "auto" joins the cluster that `ray start` made
on this machine; HOST:PORT (or ray://HOST:PORT) joins that head. A Ray already initialised in
this process is used as it is.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

from cache.store import ImageStore, StoreError
from explorer.config import CrawlConfig
from explorer.crawl.allocator import keep_freed_memory
from explorer.crawl.downloader import Downloader
from explorer.crawl.fetchers import (FAILED_STARTS, Fetched, FetchFn, HostGate, PrepareClock, fetch_and_prepare,
                                     is_past_deadline)
from explorer.errors import UserError, first_line
from explorer.records import FetchResult, UrlOutcome

INSTALL = "crawl.pool=ray needs the ray package: pip install -e '.[ray]'"
# A local Ray's processes get these (loopback_only_environment): a proxy where nothing listens
LOOPBACK_PROXY = "http://127.0.0.1:9"
LOOPBACK_EXEMPT = "127.0.0.1,localhost,::1"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


def import_ray(local: bool):
    """The `ray` module, or UserError when it is not installed. `local`: Ray is to start here,
    on loopback only (Ray reads that switch when it is imported: a node on other machines'
    network would need the opposite)."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: the node is 127.0.0.1
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


@contextlib.contextmanager
def loopback_only_environment() -> Iterator[None]:
    """This process's environment, while a local Ray starts (its processes inherit it), with
    every HTTP(S) proxy set to LOOPBACK_PROXY and loopback exempt: a local Ray's dashboard
    process asks the clouds' metadata services which cloud it runs on (169.254.169.254, and
    metadata.google.internal through DNS), usage stats off or not, and `requests` sends those
    to the proxy instead, on this machine, where they fail. Restored after, for this process's
    own clients (the search engines, which may be meant to use a proxy)."""
    saved = {name: os.environ.get(name) for name in PROXY_VARIABLES}
    for name in PROXY_VARIABLES:
        os.environ[name] = LOOPBACK_EXEMPT if name.lower() == "no_proxy" else LOOPBACK_PROXY
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(address: str, num_cpus: int | None = None) -> bool:
    """Join Ray (crawl.ray_address); True when this started a local Ray, to stop at close."""
    ray = import_ray(local=not address)
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address)
        else:
            with loopback_only_environment():
                ray.init(num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                         _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        # Ray's own reason (a token refused, say) is only in its log lines above this one
        hint = (" (a cluster with Ray's token authentication, on by default in recent Ray, needs "
                "RAY_AUTH_MODE=token here and its token: RAY_AUTH_TOKEN or ~/.ray/auth_token)") if address else ""
        raise UserError(f"cannot start or join {where} (crawl.ray_address): {first_line(e)[:300]}{hint}") from None
    return not address


class FetchActor:
    """One Ray worker: URL -> Fetched, with the prepared image's file written into the cache.
    Ray runs its async methods on the actor's own event loop, many at once."""

    def __init__(self, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None,
                 store_root: Path | None) -> None:
        keep_freed_memory()
        self.cfg, self.allow, self.corpus_root = cfg, allow, corpus_root
        # the cap is the crawl's to check (`ImageStore.claim`): the worker only writes
        self.store = ImageStore(store_root, cfg.cache_max_bytes, used_bytes=0) if store_root else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.clock = PrepareClock()
        self.downloader: Downloader | None = None
        self.opening = asyncio.Lock()

    async def _open(self) -> Downloader:
        async with self.opening:  # the client belongs to the actor's loop, which runs only in its methods
            if self.downloader is None:
                self.downloader = await Downloader(self.cfg, self.allow).__aenter__()
        return self.downloader

    async def fetch(self, url: str) -> Fetched:
        """Every image is prepared in the thread and waited for no longer than its deadline (no
        JPEG on the loop, as a fetch process does): then the answer is decode_timeout, and the
        crawl replaces this actor, whose thread is still inside the decoder."""
        try:
            downloader = await self._open()
            fetched = await fetch_and_prepare(downloader, url, self.cfg, self.corpus_root, self.pool, self.clock,
                                              object(), wait_within_deadline=True)
            if self.store is not None and isinstance(fetched.prepared, tuple):
                fetched.stored = await asyncio.to_thread(self._write, fetched.prepared[0].sha256,
                                                         fetched.prepared[0].data)
            return fetched
        except Exception as e:  # noqa: BLE001 - a bug must cost one URL, not the actor
            return Fetched(FetchResult(url=url, outcome=UrlOutcome.CONNECTION_ERROR,
                                       reason=f"unexpected {type(e).__name__} in the Ray fetch worker: {e}"[:300]))

    def _write(self, sha256: str, data: bytes) -> bool:
        """True when this wrote the file; False when it was there (another run's, or another URL's
        with the same bytes: never this worker's to have removed) or could not be written (the
        crawl writes it, or says why not)."""
        if self.store.has(sha256):
            return False
        try:
            self.store.put(sha256, data)
        except StoreError:
            return False
        return True

    def pid(self) -> int:
        return os.getpid()


class _Actor:
    """One actor's handle and what this process knows of it."""

    def __init__(self, handle, name: str) -> None:
        self.handle, self.name = handle, name
        self.jobs = 0                     # calls in flight
        self.delivered = 0
        self.alive = True
        self.over_deadline = False        # killed here over one URL's decode_timeout: resend the others
        self.counted = False              # its death is in the failed starts already


class RayFetcher:
    """Fetch and prepare in Ray actors; see the module docstring. Everything here runs on the
    event loop of the current session (or in close(), after it)."""

    def __init__(self, cfg: CrawlConfig, allow: list[str], corpus_root: Path | None,
                 store_root: Path | None) -> None:
        self.cfg, self.allow, self.corpus_root = cfg, list(allow), corpus_root
        self.store_root = Path(store_root).resolve() if store_root is not None else None
        self._started = connect(cfg.ray_address, cfg.workers or None)
        import ray
        from ray.exceptions import RayActorError, RayError
        self._ray, self._actor_error, self._ray_error = ray, RayActorError, RayError
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.n_workers = cfg.workers or max(1, int(cpus))
        # more actors than CPUs share them: an actor that cannot be placed would hold its URLs forever
        self._remote = ray.remote(FetchActor).options(num_cpus=min(1.0, cpus / self.n_workers),
                                                      max_concurrency=max(cfg.concurrency, 1), max_restarts=0)
        self.actors: list[_Actor] = []
        self._names = itertools.count()
        self._failed_starts: list[str] = []  # actors that died delivering nothing, in a row
        self._gate = HostGate(cfg)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions = 0

    @asynccontextmanager
    async def session(self) -> AsyncIterator[FetchFn]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # asyncio primitives belong to one loop
            if self._sessions:
                raise RuntimeError("a RayFetcher serves one event loop at a time")
            self._loop = loop
            self._gate.bind(loop)
        self._sessions += 1
        try:
            yield self.fetch
        finally:
            self._sessions -= 1

    async def fetch(self, url: str) -> Fetched:
        return await self._gate.send(url, self._run)

    async def _run(self, url: str, second_try: bool) -> Fetched | None:
        """`url` sent to an actor: its Fetched, or None when that actor was killed over another
        URL's deadline (first tries only; a second try gets worker_lost)."""
        actor = self._pick()
        actor.jobs += 1
        ref = actor.handle.fetch.remote(url)
        try:
            fetched = await ref
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # (an actor gone meanwhile has nothing to cancel)
                self._ray.cancel(ref)  # the actor drops the URL's coroutine
            raise
        except self._actor_error as e:
            return self._lost(actor, url, second_try, e)
        except self._ray_error as e:  # its result lost with the node that held it, say
            return self._worker_lost(url, f"the Ray fetch worker {actor.name} lost this URL's result "
                                          f"({type(e).__name__}: {first_line(e)[:200]})")
        finally:
            actor.jobs -= 1
        actor.delivered += 1
        self._failed_starts.clear()
        if is_past_deadline(fetched):  # its thread is still in the decoder: replace the actor
            actor.over_deadline = True
            self._retire(actor)
        return fetched

    def _pick(self) -> _Actor:
        """The live actor with the fewest calls in flight, starting actors up to n."""
        if len(self._failed_starts) >= FAILED_STARTS:
            raise RuntimeError(f"{len(self._failed_starts)} Ray fetch workers in a row died before fetching "
                               f"anything ({', '.join(self._failed_starts)}; their errors are above): is explore "
                               "installed on every node of the cluster? crawl.pool=process fetches on this "
                               "machine instead")
        self.actors = [a for a in self.actors if a.alive]
        while len(self.actors) < self.n_workers:
            name = f"fetch-{next(self._names)}"
            handle = self._remote.remote(self.cfg, self.allow, self.corpus_root, self.store_root)
            self.actors.append(_Actor(handle, name))
        return min(self.actors, key=lambda a: a.jobs)

    def _lost(self, actor: _Actor, url: str, second_try: bool, error: Exception) -> Fetched | None:
        """The actor died with this URL in flight: worker_lost, or None (send it again) when it
        was killed here over another URL's deadline."""
        self._retire(actor)
        if actor.over_deadline and not second_try:
            return None
        if actor.delivered == 0 and not actor.over_deadline and not actor.counted:
            actor.counted = True
            self._failed_starts.append(f"{actor.name}: {type(error).__name__}")
        return self._worker_lost(url, f"the Ray fetch worker {actor.name} died while this URL was in flight "
                                      f"({type(error).__name__}: {first_line(error)[:200]})")

    @staticmethod
    def _worker_lost(url: str, reason: str) -> Fetched:
        return Fetched(FetchResult(url=url, outcome=UrlOutcome.WORKER_LOST, reason=reason[:300]))

    def _retire(self, actor: _Actor) -> None:
        """Out of the pool, and killed (its calls in flight then fail): _pick starts another."""
        if not actor.alive:
            return
        actor.alive = False
        try:
            self._ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - dead already, or Ray going away: nothing left to stop
            pass

    def close(self) -> None:
        actors, self.actors = self.actors, []
        for actor in actors:
            self._retire(actor)
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
