"""Each query's results, kept in the run's database, so the same query is never sent twice
(not in one run, not after a resume).

Only clean answers are stored (results, or an empty list the engine gave without error);
errors are not, so a rate-limited query can be asked again later. Concurrent searches for the
same query share one request.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

from explorer.engines.base import Engine, SearchOutcome, check_refinement, clean_results, search_key


class SearchStore(Protocol):
    """What the database offers (cache/db.py)."""

    def get_search_results(self, engine_name: str, query: str) -> list[dict] | None: ...

    def put_search_results(self, engine_name: str, query: str, results: list[dict]) -> None: ...


class CachedEngine(Engine):
    """`engine`, answering from `store` when it can. An answer from the store has attempts=0."""

    def __init__(self, engine: Engine, store: SearchStore):
        self.engine = engine
        self.store = store
        self.name = engine.name
        self.schemes = engine.schemes
        self.pages = engine.pages
        self.backends = engine.backends
        self._in_flight: dict[str, asyncio.Future] = {}

    async def search(self, query: str, max_results: int, page: int = 1,
                     backend: str = "") -> SearchOutcome:
        check_refinement(self, page, backend)
        key = search_key(query, page, backend)
        cached = self.store.get_search_results(self.name, key)
        if cached is not None:
            return SearchOutcome(clean_results(cached, max_results, self.schemes, self.name),
                                 attempts=0)
        while (pending := self._in_flight.get(key)) is not None:
            await asyncio.wait([pending])
            if not pending.cancelled() and pending.exception() is None:
                outcome = pending.result()
                return dataclasses.replace(outcome, results=outcome.results[:max_results],
                                           attempts=0)
            # the first asker failed or was cancelled: ask ourselves
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            outcome = await self.engine.search(query, max_results, page, backend)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as e:
            future.set_exception(e)
            future.exception()            # marked as retrieved: no "never retrieved" log
            raise
        finally:
            del self._in_flight[key]
        future.set_result(outcome)
        if outcome.ok:
            self.store.put_search_results(
                self.name, key, [dataclasses.asdict(r) for r in outcome.results])
        return outcome

    async def aclose(self) -> None:
        await self.engine.aclose()
