"""bench/crawl.py's workloads: the photo images have the statistics they claim (bench/photo_workload.py),
and the latency server (bench/latency_server.py) answers on each virtual host's own address, with
the first-byte delay and the stalls its profile draws."""
import asyncio
import importlib.util
import io
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    """bench/NAME.py as a module, registered as bench_NAME (its dataclasses look themselves up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


photo_workload = bench_module("photo_workload")
latency_server = bench_module("latency_server")
sys.modules.setdefault("photo_workload", photo_workload)  # (bench/crawl.py imports it from its own folder)
bench_crawl = bench_module("crawl")

# A child that leaves a grandchild burning CPU and exits without reaping it once the grandchild is
# done (as a local Ray's daemons and actors escape `explore fetch`): the grandchild's CPU never
# reaches the test's RUSAGE_CHILDREN.
ESCAPING_GRANDCHILD = """
import os, sys, time
done = sys.argv[1]
if os.fork() == 0:
    start = time.process_time()
    while time.process_time() - start < 0.5:
        pass
    open(done, "w").close()
    os._exit(0)
while not os.path.exists(done):
    time.sleep(0.01)
os._exit(0)
"""


def test_photo_workload_statistics_match_the_webs_photographs():
    made = [photo_workload.make_image(("photo", seed)) for seed in range(40)]
    for body, meta in made:
        with Image.open(io.BytesIO(body)) as im:
            assert im.format == meta["format"] and im.size == (meta["width"], meta["height"])
            assert im.format != "JPEG" or bool(im.info.get("progressive")) == meta["progressive"]
        assert 300 <= min(meta["width"], meta["height"]) and max(meta["width"], meta["height"]) <= 1200
    s = photo_workload.workload_stats([meta for _, meta in made])
    assert 1.0 <= s["jpeg_bpp_median"] <= 1.6        # bits per pixel of web photographs
    assert 60 <= s["median_kB"] <= 140
    assert 80 <= s["quality_range"][0] and s["quality_range"][1] <= 95
    assert 0 < s["share_png"] < 0.2 and 0 < s["share_progressive_of_jpeg"] < 0.3
    assert s["share_jpeg"] + s["share_png"] + s["share_webp"] == pytest.approx(1.0)


def test_smooth_workload_is_the_earlier_baseline_jpegs():
    body, meta = photo_workload.make_image(("smooth", 3))
    assert meta["format"] == "JPEG" and meta["quality"] == 90 and not meta["progressive"]
    assert body.startswith(b"\xff\xd8\xff")


def test_latency_draws_are_per_url_lognormal_clipped_and_stall_the_configured_share():
    profile = latency_server.LatencyProfile(stall_share=0.05)
    paths = [f"/{i}.jpg" for i in range(4000)]
    delays = [latency_server.ttfb_s(p, profile) for p in paths]
    assert min(delays) >= profile.ttfb_min_s and max(delays) <= profile.ttfb_max_s
    assert sorted(delays)[len(delays) // 2] == pytest.approx(profile.ttfb_median_s, rel=0.1)
    assert delays == [latency_server.ttfb_s(p, profile) for p in paths]  # the same for every request
    stalls = [latency_server.stall(p, profile) for p in paths]
    assert 0.03 < sum(s is not None for s in stalls) / len(paths) < 0.07
    assert {"before", "body"} <= set(stalls)


def test_latency_server_answers_on_each_hosts_address_and_stalls_to_the_clients_timeout():
    profile = latency_server.LatencyProfile(hosts=3, ttfb_median_s=0.1, ttfb_sigma=0.2, bandwidth_Bps=200_000,
                                            chunk_s=0.05, stall_share=0.3, stall_s=5.0)
    paths = [f"/{i}.jpg" for i in range(200)]
    plain = next(p for p in paths if latency_server.stall(p, profile) is None)
    stalled = {latency_server.stall(p, profile): p for p in reversed(paths)}
    body = bytes(50_000)
    bodies = {p[1:]: body for p in paths}
    hosts = latency_server.host_addresses(profile.hosts)
    assert len(set(hosts)) == 3 and all(h.startswith("127.") for h in hosts)

    async def scenario():
        runner, port = await latency_server.start_sites(latency_server.make_app(bodies, profile), hosts)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=1.0)) as client:
                for host in hosts:
                    start = time.monotonic()
                    async with client.get(f"http://{host}:{port}{plain}") as resp:
                        got = await resp.read()
                    took = time.monotonic() - start
                    assert resp.status == 200 and got == body
                    # first byte after the drawn delay, then 50 kB at 200 kB/s (~0.25 s)
                    assert took >= latency_server.ttfb_s(plain, profile) + 0.2
                for where in ("before", "body"):
                    start = time.monotonic()
                    with pytest.raises(asyncio.TimeoutError):
                        async with client.get(f"http://{hosts[0]}:{port}{stalled[where]}") as resp:
                            await resp.read()
                    assert 0.9 <= time.monotonic() - start < 4.0  # the client's timeout, not the server's stall
                async with client.get(f"http://{hosts[1]}:{port}/stats") as resp:
                    stats = await resp.json()
                # each host answered on its address; the requests in flight counted over time
                assert sorted(stats["served"]) == sorted(f"{h}:{port}" for h in hosts)
                assert stats["in_flight_seconds"] >= 3 * 0.25 + 2 * 0.9
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_the_cpu_of_processes_that_escape_reaping_is_sampled(tmp_path):
    """bench/crawl.py counts crawl.pool=ray's CPU from /proc: RUSAGE_CHILDREN misses what its
    descendants' parents never reaped, DescendantsCpu does not (less at most one interval)."""
    sampler = bench_crawl.DescendantsCpu(interval_s=0.02)
    sampler.start()
    reaped = bench_crawl.children_cpu_s()
    subprocess.run([sys.executable, "-c", ESCAPING_GRANDCHILD, str(tmp_path / "done")], check=True, timeout=60)
    reaped = bench_crawl.children_cpu_s() - reaped
    sampled = sampler.stop()
    assert reaped < 0.3  # the child's own start-up and polling, not the grandchild's 0.5 s
    assert sampled >= 0.5 + reaped - 2 * 0.05, (sampled, reaped)  # (each process's last interval may be missed)
    assert sampled < 0.5 + reaped + 0.3  # nothing that ran before the sampler, nor outside this tree
