"""crawl.pool=ray: Ray actors fetch and prepare and write the files into the cache; this process
keeps the database and the index. One local Ray for the module (2 CPUs, loopback only, no
dashboard), crawling loopback servers: kept images and their files, bad bytes' outcomes, an
actor killed mid-fetch (worker_lost, fetched again later), a decode past its deadline
(decode_timeout, the actor replaced, its other URLs sent again), and no orphan file left by a
near duplicate."""
import asyncio
import importlib.util
import io
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Read by Ray when it is imported: the node is 127.0.0.1 (nothing listens beyond loopback), no usage report
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest
from PIL import Image

from explorer.config import CrawlConfig
from explorer.crawl import images, ray_fetcher
from explorer.crawl.crawler import Crawler, CrawlItem, make_fetcher, open_cache
from explorer.crawl.ray_fetcher import connect, loopback_only_environment
from explorer.errors import UserError
from explorer.records import UrlOutcome
from explorer.sandbox.slow_jpeg import slow_jpeg
from tests.crawl_fixtures import image_app, jpeg_bytes, serve
from tests.test_fetchers import held_app, wait_for
from tests.test_prepare_deadline import GOOD, SLOW, running, slow_beside_good_app

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install -e '.[ray]')")


# How long a step may take before the test calls it stuck: starting a Ray actor on a loaded 2-core
# machine can take tens of seconds.
WAIT_S = 180


def cfg(**kw) -> CrawlConfig:
    return CrawlConfig(**(dict(image_size=64, min_side=16, pool="ray", workers=2, retries=0,
                               connect_timeout_s=5, total_timeout_s=20) | kw))


@pytest.fixture(scope="module")
def local_ray():
    import ray

    assert connect("", num_cpus=2)  # as crawl.ray_address="" starts it: loopback only, its proxies too
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray
    finally:
        ray.shutdown()


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (Ray's daemons and workers below this test)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone meanwhile
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = {int(k) for k in f.read().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def stored_files(root) -> set[str]:
    return {p.stem for p in (root / "images").glob("*/*.jpg")}


def crawl(crawler: Crawler, urls: list[str], timeout_s: float = 120):
    return asyncio.run(asyncio.wait_for(crawler.crawl([CrawlItem(u) for u in urls]), timeout_s))


def test_without_ray_the_pool_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    with pytest.raises(UserError, match=r"pip install -e '\.\[ray\]'"):
        make_fetcher(cfg(), [], None)


def test_a_cluster_that_cannot_be_joined_is_one_line_naming_it_and_rays_token(monkeypatch):
    """No Ray is reached (Ray itself would turn a loopback address into this machine's own)."""
    class Unreachable:
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kw):
            raise ConnectionError(f"Failed to connect to Ray cluster at {kw['address']}.\nmore lines")

    monkeypatch.setitem(sys.modules, "ray", Unreachable)
    with pytest.raises(UserError) as e:
        connect("10.0.0.5:6379")
    message = str(e.value)
    assert "'10.0.0.5:6379'" in message and "crawl.ray_address" in message and "RAY_AUTH_MODE=token" in message
    assert "\n" not in message


@pytest.mark.parametrize("before", [{}, {"HTTPS_PROXY": "http://proxy.example:3128", "no_proxy": "intranet"}])
def test_a_local_rays_environment_sends_the_clouds_metadata_probes_to_loopback_and_is_restored(monkeypatch, before):
    """A local Ray's dashboard asks 169.254.169.254 and metadata.google.internal which cloud it
    is on (usage stats off or not): under loopback_only_environment `requests` (what it asks with)
    sends those to a loopback proxy, and loopback itself direct; this process's own settings come
    back after. Pure: proxies chosen, nothing sent."""
    import requests.utils

    for name in ray_fetcher.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in before.items():
        monkeypatch.setenv(name, value)
    with loopback_only_environment():
        for url in ("http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/computeMetadata/v1",
                    "https://10.1.2.3/", "http://[fd00::1]:80/"):
            proxies = requests.utils.get_environ_proxies(url)
            assert requests.utils.select_proxy(url, proxies) == ray_fetcher.LOOPBACK_PROXY, url
        for url in ("http://127.0.0.1:6379/", "http://localhost:8265/", "http://[::1]:52365/"):
            assert not requests.utils.get_environ_proxies(url), url
    assert {n: os.environ[n] for n in ray_fetcher.PROXY_VARIABLES if n in os.environ} == before


@needs_ray
def test_the_local_rays_processes_have_the_loopback_proxy_and_this_process_not(local_ray):
    environments = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environment = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue  # gone meanwhile
        # Ray's programs (GCS, raylet, dashboard, monitors), not other tests' processes; nor its
        # workers and agents, retitled "ray::...", which writes over what /proc shows of their environment
        if b"/ray/" in command and not command.startswith(b"ray::"):
            environments.append(environment)
    assert len(environments) >= 3  # at least the GCS, the raylet and the dashboard
    for env in environments:
        assert env.get(b"http_proxy") == env.get(b"HTTPS_PROXY") == ray_fetcher.LOOPBACK_PROXY.encode()
        assert env.get(b"no_proxy") == ray_fetcher.LOOPBACK_EXEMPT.encode()
    assert os.environ.get("http_proxy") != ray_fetcher.LOOPBACK_PROXY


def own_network_namespace() -> bool:
    """Whether this machine lets a test run a command in a network namespace of its own (root,
    or user namespaces), with strace to watch it."""
    if not (shutil.which("unshare") and shutil.which("strace") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    return probe.returncode == 0


# A local Ray started as crawl.pool=ray starts it, kept up while its dashboard settles (it asks
# the clouds' metadata services within seconds of its start), with one task run on it.
LOCAL_RAY_SCRIPT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from explorer.crawl.ray_fetcher import connect
import ray
assert connect("", num_cpus=1)
ray.get(ray.remote(lambda: os.getpid()).remote())
time.sleep(10)
ray.shutdown()
"""
CONNECT_TO = re.compile(r'connect\(\d+, \{sa_family=AF_INET6?, .*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


@needs_ray
@pytest.mark.skipif(not own_network_namespace(), reason="needs unshare -n, ip and strace (root or user namespaces)")
def test_a_local_ray_and_all_its_processes_connect_to_loopback_only(tmp_path):
    """Every connect() of a local Ray's processes, seen by strace, in a network namespace with
    nothing but lo: an address beyond loopback is tried there (and fails), never reached. Before
    loopback_only_environment its dashboard tried 169.254.169.254:80 and the DNS resolver."""
    script, log = tmp_path / "local_ray.py", tmp_path / "connects.log"
    script.write_text(LOCAL_RAY_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    run = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec strace -f -qq -e trace=connect '
                          '-o "$0" "$1" "$2" "$3"', str(log), sys.executable, str(script), root],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    tried = [a or b for a, b in CONNECT_TO.findall(log.read_text())]
    assert tried  # strace saw Ray's own connections
    assert [a for a in tried if not is_loopback(a)] == []


@needs_ray
def test_ray_workers_keep_images_write_their_files_and_give_bad_bytes_their_outcomes(local_ray, tmp_path,
                                                                                     monkeypatch):
    files = {f"/{i}.jpg": (jpeg_bytes(160, 120, seed=i), {}) for i in range(6)}
    files["/truncated.jpg"] = (jpeg_bytes(400, 300, seed=40)[:900], {})
    files["/text.jpg"] = (b"<html>not an image</html>", {})
    app, hits = image_app(files)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        c = cfg()
        cache = open_cache(tmp_path, c)

        def driver_put(sha256, data):  # every kept file is the workers' to write
            raise AssertionError("this process wrote an image file")

        monkeypatch.setattr(cache.store, "put", driver_put)
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            attempts = crawl(crawler, [f"{base}{path}" for path in files] + [f"{base}/missing.jpg"])
            assert len(crawler.fetcher.actors) == 2
        by_path = {a.url.removeprefix(base): a for a in attempts}
        assert [by_path[f"/{i}.jpg"].outcome for i in range(6)] == [UrlOutcome.OK] * 6
        assert by_path["/truncated.jpg"].outcome == UrlOutcome.CORRUPT
        assert by_path["/text.jpg"].outcome == UrlOutcome.NOT_IMAGE
        assert by_path["/missing.jpg"].outcome == UrlOutcome.HTTP_ERROR
        kept = {by_path[f"/{i}.jpg"].sha256 for i in range(6)}
        assert stored_files(tmp_path) == kept and cache.db.image_stats()[0] == 6
        assert len(cache.index.ids()) == 6
        assert cache.store.used_bytes == sum(cache.store.path(s).stat().st_size for s in kept)  # counted
        assert all(n == 1 for n in hits.values())
        cache.close()


def near_copy(body: bytes) -> bytes:
    """The same picture re-encoded: other bytes (another sha256), the same look."""
    out = io.BytesIO()
    Image.open(io.BytesIO(body)).save(out, "JPEG", quality=60)
    return out.getvalue()


@needs_ray
def test_a_near_duplicate_leaves_no_file_behind_but_files_the_cache_holds_stay(local_ray, tmp_path):
    original = jpeg_bytes(200, 150, seed=7)
    files = {"/a.jpg": (original, {}), "/a-again.jpg": (original, {}), "/b.jpg": (near_copy(original), {}),
             "/c.jpg": (near_copy(near_copy(original)), {})}
    app, _ = image_app(files)
    c = cfg()
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, c)
        discarded, discard = [], cache.store.discard
        cache.store.discard = lambda sha256: (discarded.append(sha256), discard(sha256))
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            (a,) = crawl(crawler, [f"{base}/a.jpg"])
            assert a.outcome == UrlOutcome.OK
            # another run sharing the store holds /c.jpg's image already: its file is not ours to remove
            c_sha = images.prepare_with_embedding(files["/c.jpg"][0], c)[0].sha256
            cache.store.path(c_sha).write_bytes(b"another run's file")
            later = {x.url.removeprefix(base): x for x in
                     crawl(crawler, [f"{base}/a-again.jpg", f"{base}/b.jpg", f"{base}/c.jpg"])}
        assert later["/a-again.jpg"].outcome == UrlOutcome.DUPLICATE
        assert later["/b.jpg"].outcome == UrlOutcome.NEAR_DUPLICATE
        assert later["/c.jpg"].outcome == UrlOutcome.NEAR_DUPLICATE and later["/c.jpg"].sha256 == c_sha
        assert later["/b.jpg"].sha256 not in (a.sha256, c_sha)
        assert discarded == [later["/b.jpg"].sha256]  # written by a worker, then removed
        assert stored_files(tmp_path) == {a.sha256, c_sha}
        assert cache.db.image_stats()[0] == 1
        cache.close()


@needs_ray
def test_a_killed_actor_gives_worker_lost_and_a_later_crawl_fetches_its_url_again(local_ray, tmp_path):
    app, arrived, release, hits = held_app()
    c = cfg()
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, c)
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            async def kill_while_held():
                task = asyncio.create_task(crawler.crawl([CrawlItem(f"{base}/hold.jpg")]))
                await wait_for(arrived, WAIT_S)
                (busy,) = [a for a in crawler.fetcher.actors if a.jobs]
                pid = await busy.handle.pid.remote()
                os.kill(pid, signal.SIGKILL)  # the OOM killer, or a node gone
                return await asyncio.wait_for(task, WAIT_S), busy

            (lost,), busy = asyncio.run(kill_while_held())
            assert lost.outcome == UrlOutcome.WORKER_LOST and busy.name in lost.reason
            assert cache.db.outcome_counts() == {"worker_lost": 1}

            release.set()
            after = crawl(crawler, [f"{base}/{i}.jpg" for i in range(4)] + [f"{base}/hold.jpg"])
            assert [a.outcome for a in after] == [UrlOutcome.OK] * 5  # a new actor; the lost URL fetched again
            assert busy not in crawler.fetcher.actors and len(crawler.fetcher.actors) == 2
            assert hits["/hold.jpg"] == 2 and cache.db.image_stats()[0] == 5
            assert crawler.fetcher._failed_starts == []
        cache.close()


@needs_ray
def test_a_decode_past_the_deadline_gives_decode_timeout_and_the_actor_is_replaced(local_ray, tmp_path):
    app, requested, release, hits = slow_beside_good_app(slow_jpeg(*SLOW))
    c = cfg(workers=1, prepare_timeout_s=0.5)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, c)
        items = [CrawlItem(f"{base}/slow.jpg")] + [CrawlItem(f"{base}/{i}.jpg") for i in range(GOOD)]
        with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"]) as crawler:
            async def crawl_past_the_deadline():
                started = time.monotonic()
                task = asyncio.create_task(crawler.crawl(items))
                while not requested.is_set() or not crawler.fetcher.actors:
                    assert time.monotonic() - started < WAIT_S, "the slow image was never asked for"
                    await asyncio.sleep(0.01)
                (first,) = crawler.fetcher.actors
                pid = await first.handle.pid.remote()
                # the good URLs wait at the server meanwhile, in flight on this actor, then on the next
                while not all(hits.get(f"/{i}.jpg", 0) == 2 for i in range(GOOD)):
                    assert time.monotonic() - started < WAIT_S, f"the slow decode was not cut ({hits})"
                    await asyncio.sleep(0.01)
                release.set()
                return await asyncio.wait_for(task, WAIT_S), first, pid

            attempts, first, pid = asyncio.run(crawl_past_the_deadline())
            by_path = {a.url.removeprefix(base): a for a in attempts}
            assert by_path["/slow.jpg"].outcome == UrlOutcome.DECODE_TIMEOUT, by_path["/slow.jpg"]
            assert "prepare_timeout_s" in by_path["/slow.jpg"].reason
            assert [by_path[f"/{i}.jpg"].outcome for i in range(GOOD)] == [UrlOutcome.OK] * GOOD
            assert cache.db.image_stats()[0] == GOOD
            assert first.over_deadline and not first.alive and first not in crawler.fetcher.actors
            end = time.monotonic() + 30
            while running(pid):  # killed, not left decoding for half a minute
                assert time.monotonic() < end, "the actor past its deadline still runs"
                time.sleep(0.05)

            again = crawl(crawler, [f"{base}/slow.jpg"])  # final: never fetched again
            assert again[0].outcome == UrlOutcome.DECODE_TIMEOUT and again[0].recorded_before
            assert hits["/slow.jpg"] == 1 and crawler.fetcher._failed_starts == []
        cache.close()


@needs_ray
def test_actors_that_cannot_start_stop_the_crawl_with_one_clear_error(local_ray, tmp_path):
    from tests.test_fetchers import ExitWhenUnpickled

    c = cfg(workers=1)
    cache = open_cache(tmp_path, c)
    items = [CrawlItem(f"http://127.0.0.1:9/{i}.jpg") for i in range(2)]
    error = None
    with Crawler.for_cache(cache, c, allow=[ExitWhenUnpickled()]) as crawler:  # each actor dies as it starts
        for _ in range(4):
            try:
                attempts = asyncio.run(asyncio.wait_for(crawler.crawl(items), 120))
            except RuntimeError as e:
                error = str(e)
                break
            assert {a.outcome for a in attempts} == {UrlOutcome.WORKER_LOST}
    cache.close()
    assert error is not None, "the crawl went on after 3 actors in a row died at start"
    assert "Ray fetch workers in a row died before fetching anything" in error and "crawl.pool=process" in error
