"""Image search engines behind one interface.

    engine = make_engine("ddgs" | "sandbox" | "corpus:PATH", cfg.crawl, sandbox_url=...)
    outcome = await engine.search("red rose", max_results=100)   # -> SearchOutcome

Wrap an engine in `CachedEngine(engine, db)` so a query is never sent twice.
"""
from __future__ import annotations

from explorer.config import CrawlConfig
from explorer.engines.base import (Backoff, Engine, RateLimiter, RetryingEngine, SearchAttempt,
                                   SearchOutcome, clean_results, search_key)
from explorer.engines.cached import CachedEngine, SearchStore
from explorer.engines.corpus import CorpusEngine
from explorer.engines.ddgs_engine import DDGSEngine
from explorer.engines.sandbox import SandboxEngine

__all__ = ["Backoff", "CachedEngine", "CorpusEngine", "DDGSEngine", "Engine",
           "NoEngine", "RateLimiter", "RetryingEngine", "SandboxEngine", "SearchAttempt", "SearchOutcome", "SearchStore",
           "clean_results", "make_engine", "search_key"]

SPECS = "ddgs, sandbox, corpus:PATH, none"


class NoEngine(Engine):
    """Searches nothing: the target-only baseline (MUG on the target's own images)."""

    name = "none"

    async def search(self, query: str, max_results: int, page: int = 1,
                     backend: str = "") -> SearchOutcome:
        return SearchOutcome([], attempts=0)


def make_engine(spec: str, cfg: CrawlConfig, sandbox_url: str | None = None,
                progress: bool = True) -> Engine:
    """The engine named by `spec` (crawl.engine): "ddgs", "sandbox", "corpus:PATH" or "none".
    `progress`: whether a corpus may draw a bar while it embeds a large table's captions."""
    kind, sep, arg = spec.strip().partition(":")
    if kind == "ddgs" and not sep:
        return DDGSEngine(cfg)
    if kind == "sandbox" and not sep:
        if not sandbox_url:
            raise ValueError("engine 'sandbox' needs the sandbox web's URL (start it with "
                             "`explore sandbox`, or run a sandbox target)")
        return SandboxEngine(sandbox_url, cfg)
    if kind == "none" and not sep:
        return NoEngine()
    if kind == "corpus":
        if not arg.strip():
            raise ValueError("engine 'corpus:PATH' needs a path: a folder of images or a "
                             "CSV/parquet of url,caption")
        return CorpusEngine(arg.strip(), cfg, progress=progress)
    raise ValueError(f"unknown search engine {spec!r}; expected one of: {SPECS}")
