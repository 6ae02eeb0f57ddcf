"""The sandbox engine and the crawler together against the sandbox's hostile profile: every
result gets exactly one recorded outcome, the faults show up as their outcomes, and nothing
reaches the forbidden loopback listeners."""
import asyncio
import sqlite3

import pytest

from explorer.config import CrawlConfig
from explorer.crawl.crawler import Crawler, CrawlItem, open_cache
from explorer.engines import CachedEngine, SandboxEngine
from explorer.sandbox.server import start_sandbox

QUERIES = ["red rose", "wild tulip", "vintage sports car", "blue jay bird", "pink daisy", "old tractor"]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_search_and_crawl_the_hostile_sandbox(tmp_path, pool):
    cfg = CrawlConfig(image_size=64, min_side=16, read_timeout_s=1.0, connect_timeout_s=1.0,
                      total_timeout_s=4.0, retries=1, retry_backoff_s=0.01, search_backoff_s=0.01,
                      search_backoff_max_s=0.05, search_retries=8, pool=pool, workers=2,
                      max_bytes=2_000_000)
    with start_sandbox(seed=3, profile="hostile", stall_s=3.0, oversize_bytes=3_000_000,
                       gzip_bomb_bytes=3_000_000) as web:
        cache = open_cache(tmp_path / "cache", cfg)

        async def go():
            engine = CachedEngine(SandboxEngine(web.url, cfg), cache.db)
            items, outcomes = [], []
            async with engine:
                for q in QUERIES:
                    outcome = await engine.search(q, 40)
                    outcomes.append(outcome)
                    qid = cache.db.add_query(0, q, q, engine.name)
                    items += [CrawlItem(r.image, r.title, qid, 0) for r in outcome.results]
            with Crawler.for_cache(cache, cfg, allow=[web.host_port]) as crawler:
                return outcomes, items, await crawler.crawl(items)

        outcomes, items, attempts = asyncio.run(go())
        stats = web.stats()
    assert all(o.results for o in outcomes), [o.error for o in outcomes]   # 429/202 retried through
    assert stats["faults"].get("http_429", 0) + stats["faults"].get("http_202", 0) > 0
    distinct = {(i.url, i.query_id) for i in items}
    assert len(attempts) == len(distinct)
    rows = sqlite3.connect(cache.db.path).execute(
        "SELECT url, query_id, COUNT(*) FROM attempts GROUP BY url, query_id").fetchall()
    assert len(rows) == len(distinct) and all(n == 1 for *_, n in rows)
    seen = {a.outcome.value for a in attempts}
    assert "ok" in seen
    assert len(seen & {"http_error", "timeout", "too_large", "bomb", "not_image", "corrupt",
                       "forbidden_address", "robots", "redirect_limit"}) >= 5, seen
    assert sum(stats["forbidden_hits"].values()) == 0
