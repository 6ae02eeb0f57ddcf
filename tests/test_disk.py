"""A full disk and a read-only cache: one clear error, state kept, resume once space returns.

The crawler records every attempt of the batch (images it could not store get `disk_full`,
which is retryable), then raises the store's error; a run stops on it with one line. Space
back, the same crawl fetches only what was not stored, and the cache verifies clean.
The tmpfs tests mount a tiny filesystem (root only; skipped where mounting is not allowed).
"""
import asyncio
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from cache.store import CacheFull, StoreError
from cache.verify import verify
from explorer.config import CrawlConfig
from explorer.crawl.crawler import CHEAP_EMBEDDING, CrawlItem, Crawler, open_cache
from explorer.sandbox.server import start_sandbox

ROOT = Path(__file__).resolve().parent.parent
CFG = CrawlConfig(image_size=64, workers=1, pool="thread", concurrency=16, per_host=16, retries=0)


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture(scope="module")
def sandbox():
    with start_sandbox(seed=0, profile="none") as server:
        yield server


def items(server, n: int) -> list[CrawlItem]:
    return [CrawlItem(f"{server.url}/img/{server.world.web_image_id(i, 0)}.jpg") for i in range(n)]


def crawl(cache_dir: Path, db_path: Path, server, todo: list[CrawlItem], cfg: CrawlConfig = CFG):
    """One crawl with a fresh Crawler (as a resumed run makes): (attempts or the StoreError, outcomes)."""
    cache = open_cache(cache_dir, cfg, db_path=db_path)
    try:
        with Crawler.for_cache(cache, cfg, allow=[server.host_port], stop_when_full=True) as crawler:
            crawler.reconcile_index()
            try:
                result = asyncio.run(crawler.crawl(todo))
            except StoreError as e:
                result = e
        return result, cache.db.outcome_counts()
    finally:
        cache.close()


def test_disk_full_stops_the_crawl_keeps_state_and_resumes(tmp_path, sandbox):
    todo = items(sandbox, 120)
    with tmpfs(tmp_path / "cache", "160k") as cache_dir:
        error, outcomes = crawl(cache_dir, tmp_path / "explore.db", sandbox, todo)
        assert isinstance(error, CacheFull) and "disk full" in str(error), error
        assert outcomes.get("disk_full", 0) > 0 and outcomes.get("ok", 0) > 0
        assert sum(outcomes.values()) == len(todo)  # every URL recorded before the error
        remount(cache_dir, "size=20m")
        attempts, outcomes = crawl(cache_dir, tmp_path / "explore.db", sandbox, todo)
        assert not isinstance(attempts, Exception), attempts
        assert "disk_full" not in outcomes and sum(outcomes.values()) == len(todo)
        refetched = [a for a in attempts if not a.recorded_before]
        assert 0 < len(refetched) < len(todo)  # only what was not stored is fetched again
        assert verify(cache_dir, tmp_path / "explore.db", embedding=CHEAP_EMBEDDING) == []


def test_read_only_cache_is_one_clear_error_and_resumes(tmp_path, sandbox):
    todo = items(sandbox, 40)
    with tmpfs(tmp_path / "cache", "20m") as cache_dir:
        open_cache(cache_dir, CFG, db_path=tmp_path / "explore.db").close()
        remount(cache_dir, "ro")
        error, outcomes = crawl(cache_dir, tmp_path / "explore.db", sandbox, todo)
        assert isinstance(error, StoreError) and "Read-only" in str(error), error
        assert outcomes == {"disk_full": len(todo)}
        remount(cache_dir, "rw")
        attempts, outcomes = crawl(cache_dir, tmp_path / "explore.db", sandbox, todo)
        assert not isinstance(attempts, Exception), attempts
        assert outcomes.get("ok", 0) > 0 and "disk_full" not in outcomes
        assert verify(cache_dir, tmp_path / "explore.db", embedding=CHEAP_EMBEDDING) == []


def test_cache_cap_gives_disk_full_outcomes_without_stopping_by_default(tmp_path, sandbox):
    cfg = CrawlConfig(**{**CFG.__dict__, "cache_max_bytes": 20_000})
    cache = open_cache(tmp_path / "cache", cfg)
    with Crawler.for_cache(cache, cfg, allow=[sandbox.host_port]) as crawler:  # `explore fetch`
        asyncio.run(crawler.crawl(items(sandbox, 30)))
    outcomes = cache.db.outcome_counts()
    cache.close()
    assert outcomes.get("disk_full", 0) > 0 and outcomes.get("ok", 0) > 0


def explore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=400)


@pytest.mark.slow
def test_run_stops_with_one_line_when_the_cache_is_full_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    small = ["--set", "train.steps_per_round=3", "--set", "train.batch_size=16", "--set", "crawl.queries_per_round=4",
             "--set", "crawl.results_per_query=12", "--set", f"run.data_root={tmp_path / 'data'}",
             "--set", "eval.label_fractions=1.0", "--set", "eval.probe_c=1.0"]
    first = explore("run", "--target", "sandbox-flowers", "--rounds", "1", "--run-dir", str(run_dir), "--quiet",
                    "--set", "crawl.cache_max_bytes=15000", *small)
    assert first.returncode == 1, first.stderr[-2000:]
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cache cap" in errors[0], first.stderr[-2000:]
    assert "Traceback" not in first.stderr
    again = explore("resume", str(run_dir), "--quiet", "--set", "crawl.cache_max_bytes=50000000")
    assert again.returncode == 0, again.stderr[-2000:]
    assert verify(run_dir / "cache", run_dir / "explore.db", embedding=CHEAP_EMBEDDING) == []
    import sqlite3

    with sqlite3.connect(run_dir / "explore.db") as con:
        assert con.execute("SELECT COUNT(*) FROM attempts WHERE outcome='disk_full'").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM rounds WHERE status='done'").fetchone()[0] == 1
