"""The soak harness: the crawler against the sandbox's hostile profile for a while, and the
invariants checked at the end (one attempts row per URL with an outcome its fault allows, the
server's /stats reconciled, flat memory, bounded file descriptors). Shared by tests/test_soak.py
(one minute) and bench/soak.py (20 minutes), which says what each check is.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from explorer.config import CrawlConfig
from explorer.crawl.crawler import CrawlItem, Crawler, open_cache
from explorer.sandbox import faults
from explorer.sandbox.server import bomb_png, gzip_bomb, start_sandbox
from explorer.sandbox.world import FORMATS, World
from tests.proc_fixtures import descendants

KEPT = {"ok", "duplicate", "near_duplicate", "test_leak"}
# fault kind -> the outcomes it may end in (None: a good image)
ALLOWED: dict[str | None, set[str]] = {
    None: KEPT, "wrong_content_type": KEPT, "redirect_ok": KEPT,
    "http_404": {"http_error"}, "http_500": {"http_error"},
    "stall": {"timeout"},                        # stall_s is longer than the read timeout
    "truncated": {"corrupt", "connection_error"},  # half a file, or a body short of its length
    "html_as_image": {"not_image"}, "bomb": {"bomb"},
    "oversize": {"too_large"}, "oversize_chunked": {"too_large"}, "gzip_bomb": {"too_large"},
    "redirect_loop": {"redirect_limit"}, "redirect_forbidden": {"forbidden_address"},
    "x_robots": {"robots"},
}
GOOD_BODY = {None, "wrong_content_type", "redirect_ok", "x_robots"}  # faults that send a real image


@dataclass
class SoakOptions:
    duration_s: float = 1200.0
    profile: str = "hostile"
    seed: int = 0
    batch: int = 2000                 # URLs per Crawler.crawl call
    concurrency: int = 64
    stall_s: float = 8.0              # server silence; longer than read_timeout_s, so a timeout
    read_timeout_s: float = 4.0
    max_bytes: int = 1_000_000        # byte cap; the oversize faults send a bit more
    workers: int = 0                  # prepare processes; 0 = one per core
    warmup_share: float = 0.2         # samples left out of the memory fit
    min_attempts: int = 0             # fail when fewer URLs were attempted
    max_slope_mb: float = 5.0         # allowed RSS growth (index excluded), MB per 10k attempts
    max_fds: int = 512
    max_timing_share: float = 0.005   # timing outcomes allowed, as a share of attempts
    cache_dir: str = ""               # "" = a temporary directory, removed afterwards


@dataclass
class Sample:
    seconds: float
    attempts: int
    rss_mb: float                     # this process
    children_rss_mb: float            # the prepare workers
    index_mb: float                   # what the FAISS index holds
    fds: int


@dataclass
class SoakResult:
    attempts: int = 0
    seconds: float = 0.0
    outcomes: dict = field(default_factory=dict)
    faults_expected: dict = field(default_factory=dict)
    faults_served: dict = field(default_factory=dict)
    timeouts: dict = field(default_factory=dict)   # fault kind ("none" for a good URL) -> timeouts
    timing_outcomes: int = 0                        # outcomes explained by timing, not by the fault
    img_requests: tuple[int, int] = (0, 0)     # (expected, served)
    good_bodies: tuple[int, int] = (0, 0)      # (expected, served)
    forbidden_hits: dict = field(default_factory=dict)
    rss_slope_mb_per_10k: float = float("nan")
    rss_slope_ex_index_mb_per_10k: float = float("nan")
    workers_rss_slope_mb_per_10k: float = float("nan")
    rss_first_mb: float = 0.0
    rss_last_mb: float = 0.0
    fd_max: int = 0
    problems: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- process measurements --------------------------------------------------------------------

def rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children_rss_mb() -> float:
    """The fork server, its fetch workers and multiprocessing's resource tracker."""
    return sum(rss_mb(p) for p in descendants())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class FdWatch:
    """The highest open-fd count seen, sampled every `every` seconds in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.max = every, open_fds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.max = max(self.max, open_fds())

    def __enter__(self) -> "FdWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def slope_per_10k(samples: list[Sample], values: list[float], warmup_share: float) -> float:
    """Least-squares slope of `values` against attempts, after warm-up, in units per 10k attempts."""
    start = int(len(samples) * warmup_share)
    x = np.array([s.attempts for s in samples[start:]], float)
    y = np.array(values[start:], float)
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0] * 10_000)


# ---- URLs ------------------------------------------------------------------------------------

def image_urls(world: World, base: str, seed: int):
    """Distinct image URLs in a seeded random order: (concept, variant, copy 0-1, format)."""
    n_concepts, n_variants, copies = len(world.concepts), world.images_per_concept, 2
    order = np.random.default_rng(seed).permutation(n_concepts * n_variants * copies * len(FORMATS))
    for i in order:
        i, ext = divmod(int(i), len(FORMATS))
        i, copy = divmod(i, copies)
        concept, variant = divmod(i, n_variants)
        yield f"{base}/img/{world.web_image_id(concept, variant, copy)}.{FORMATS[ext]}"


# ---- the soak --------------------------------------------------------------------------------

def run_soak(opts: SoakOptions, log=print) -> SoakResult:
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(tempfile.mkdtemp(prefix="soak-"))
    cfg = CrawlConfig(concurrency=opts.concurrency, per_host=opts.concurrency, connect_timeout_s=2.0,
                      read_timeout_s=opts.read_timeout_s, total_timeout_s=10.0, max_bytes=opts.max_bytes,
                      retries=2, retry_backoff_s=0.01, image_size=64, workers=opts.workers, db_batch=256)
    result = SoakResult()
    server = start_sandbox(seed=opts.seed, profile=opts.profile, stall_s=opts.stall_s,
                           oversize_bytes=opts.max_bytes + 500_000, gzip_bomb_bytes=opts.max_bytes * 2,
                           cache_bytes=4_000_000)
    bomb_png(), gzip_bomb(opts.max_bytes * 2)  # built once, before the clock: not a stall
    cache = open_cache(cache_dir, cfg)
    try:
        with server, Crawler.for_cache(cache, cfg, allow=[server.host_port]) as crawler, FdWatch() as fds:
            result = _soak(opts, server, cache, crawler, log)
            result.fd_max = fds.max
            result.faults_served = server.stats()
    finally:
        cache.close()
        if not opts.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    _check(opts, result, cfg)
    return result


def _soak(opts: SoakOptions, server, cache, crawler: Crawler, log) -> SoakResult:
    result = SoakResult()
    urls = image_urls(server.world, server.url, opts.seed)
    started = time.monotonic()
    submitted = returned = 0   # URLs are not kept (that would grow memory): drawn again at the end
    sample = lambda: Sample(time.monotonic() - started, submitted, rss_mb(), children_rss_mb(),  # noqa: E731
                            len(crawler.index) * (crawler.index.dim * 4 + 8) / 2**20, open_fds())
    result.samples.append(sample())
    while time.monotonic() - started < opts.duration_s:
        batch = [CrawlItem(next(urls)) for _ in range(opts.batch)]
        returned += len(asyncio.run(crawler.crawl(batch)))
        submitted += len(batch)
        del batch
        s = sample()
        result.samples.append(s)
        log(f"{s.seconds:7.0f} s  {s.attempts:7d} attempts  {s.attempts / s.seconds:6.1f}/s  "
            f"rss {s.rss_mb:6.1f} MB (+{s.children_rss_mb:.0f} MB workers, index {s.index_mb:.1f} MB)  fds {s.fds}")
    result.seconds = time.monotonic() - started
    result.attempts = submitted
    if returned != submitted:
        result.problems.append(f"crawl returned {returned} attempts for {submitted} URLs")
    check_rows(opts, result, cache, list(itertools.islice(image_urls(server.world, server.url, opts.seed), submitted)))
    return result


def check_rows(opts: SoakOptions, result: SoakResult, cache, submitted: list[str]) -> None:
    """One attempt row per URL, each with an outcome its URL's fault allows."""
    by_url: dict[str, str] = {}
    for url, outcome in cache.db.conn.execute("SELECT url, outcome FROM attempts"):
        if url in by_url:
            result.problems.append(f"{url} has more than one attempt row")
        by_url[url] = outcome
    missing = [u for u in submitted if u not in by_url]
    if missing:
        result.problems.append(f"{len(missing)} URLs without an attempt row, e.g. {missing[:3]}")
    if len(by_url) != len(set(submitted)):
        result.problems.append(f"{len(by_url)} attempt rows for {len(set(submitted))} URLs")
    result.outcomes = dict(sorted(Counter(by_url.values()).items()))
    fault_of = {u: faults.image_fault(opts.seed, opts.profile, urlsplit(u).path) for u in submitted}
    result.faults_expected = dict(Counter(fault_of.values()))
    result.timeouts = dict(Counter(str(fault_of[u]).lower() for u in submitted if by_url.get(u) == "timeout"))
    wrong = Counter((fault_of[u], by_url[u]) for u in submitted
                    if u in by_url and by_url[u] not in ALLOWED[fault_of[u]])
    for (fault, outcome), n in sorted(wrong.items(), key=str):
        if outcome == "timeout" or (fault == "stall" and outcome in KEPT):
            result.timing_outcomes += n
        else:
            result.problems.append(f"{n} URLs with fault {fault} ended {outcome} (allowed: {sorted(ALLOWED[fault])})")
    if result.timing_outcomes > opts.max_timing_share * max(len(submitted), 1):
        result.problems.append(f"{result.timing_outcomes} outcomes explained only by timing "
                               f"(over {opts.max_timing_share:.1%} of {len(submitted)})")


def _check(opts: SoakOptions, r: SoakResult, cfg: CrawlConfig) -> None:
    """Compare with the server's counters and fit the memory slope."""
    stats = r.faults_served
    per_url = lambda kind: (cfg.retries + 1) if kind == "http_500" else 1  # noqa: E731  requests per URL
    expected = {k: n * per_url(k) for k, n in r.faults_expected.items() if k is not None}
    served = dict(stats.get("faults", {}))
    r.faults_served = served
    t = r.timeouts
    for kind in sorted(set(expected) | set(served)):
        short = expected.get(kind, 0) - served.get(kind, 0)  # timed out before the server saw them
        if not 0 <= short <= t.get(kind, 0) * per_url(kind):
            r.problems.append(f"/stats: {kind} served {served.get(kind, 0)} times, expected {expected.get(kind, 0)}"
                              f" ({t.get(kind, 0)} of its URLs timed out)")
    n = r.faults_expected
    img = r.attempts + n.get("http_500", 0) * cfg.retries + n.get("redirect_ok", 0)
    r.img_requests = (img, stats.get("requests", {}).get("img", 0))
    r.good_bodies = (sum(n.get(k, 0) for k in GOOD_BODY), stats.get("images_served", 0))
    all_timeouts = sum(v * (per_url(k) + (k == "redirect_ok")) for k, v in t.items())
    good_timeouts = sum(v * 1 for k, v in t.items() if k in {str(g).lower() for g in GOOD_BODY})
    if not 0 <= r.img_requests[0] - r.img_requests[1] <= all_timeouts:
        r.problems.append(f"/stats: {r.img_requests[1]} /img requests, expected {r.img_requests[0]}")
    if not 0 <= r.good_bodies[0] - r.good_bodies[1] <= good_timeouts:
        r.problems.append(f"/stats: {r.good_bodies[1]} good image bodies served, expected {r.good_bodies[0]}")
    r.forbidden_hits = stats.get("forbidden_hits", {})
    if any(r.forbidden_hits.values()):
        r.problems.append(f"forbidden listeners reached: {r.forbidden_hits}")
    s = r.samples
    r.rss_first_mb, r.rss_last_mb = s[0].rss_mb, s[-1].rss_mb
    r.rss_slope_mb_per_10k = slope_per_10k(s, [x.rss_mb for x in s], opts.warmup_share)
    r.rss_slope_ex_index_mb_per_10k = slope_per_10k(s, [x.rss_mb - x.index_mb for x in s], opts.warmup_share)
    if r.rss_slope_ex_index_mb_per_10k > opts.max_slope_mb:
        r.problems.append(f"RSS grows {r.rss_slope_ex_index_mb_per_10k:.2f} MB per 10k attempts "
                          f"beyond the index (limit {opts.max_slope_mb})")
    r.workers_rss_slope_mb_per_10k = slope_per_10k(s, [x.children_rss_mb for x in s], opts.warmup_share)
    if r.workers_rss_slope_mb_per_10k > opts.max_slope_mb:
        r.problems.append(f"the fetch workers' RSS grows {r.workers_rss_slope_mb_per_10k:.2f} MB per 10k attempts "
                          f"(limit {opts.max_slope_mb})")
    if r.fd_max > opts.max_fds:
        r.problems.append(f"{r.fd_max} open file descriptors at most (limit {opts.max_fds})")
    if r.attempts < opts.min_attempts:
        r.problems.append(f"only {r.attempts} URL attempts (wanted at least {opts.min_attempts})")


def report(r: SoakResult) -> str:
    lines = [
        f"attempts: {r.attempts} in {r.seconds:.0f} s = {r.attempts / max(r.seconds, 1e-9):.1f} attempts/s",
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in r.outcomes.items()),
        "faults (server /stats served vs expected from the URLs):",
    ]
    expected = {k: v for k, v in r.faults_expected.items() if k is not None}
    for kind in sorted(set(expected) | set(r.faults_served)):
        lines.append(f"  {kind:20s} {r.faults_served.get(kind, 0):7d}  (URLs with it: {expected.get(kind, 0)})")
    lines += [
        f"/img requests: served {r.img_requests[1]}, expected {r.img_requests[0]}; good bodies served "
        f"{r.good_bodies[1]}, expected {r.good_bodies[0]}; forbidden hits: {sum(r.forbidden_hits.values())}",
        f"timing outcomes (a timeout, or a stall that got through on a busy loop): {r.timing_outcomes}; "
        f"timeouts by fault: {dict(sorted(r.timeouts.items()))}",
        f"RSS: {r.rss_first_mb:.1f} -> {r.rss_last_mb:.1f} MB; slope {r.rss_slope_mb_per_10k:+.2f} MB per 10k "
        f"attempts, {r.rss_slope_ex_index_mb_per_10k:+.2f} without the FAISS index; fetch workers (with their "
        f"fork server) {r.samples[0].children_rss_mb:.1f} -> {r.samples[-1].children_rss_mb:.1f} MB, slope "
        f"{r.workers_rss_slope_mb_per_10k:+.2f}",
        f"open fds: max {r.fd_max}",
        "OK" if r.ok else "FAILED:\n  " + "\n  ".join(r.problems),
    ]
    return "\n".join(lines)
