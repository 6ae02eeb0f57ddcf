"""Unavailable is not useless: a search the engine did not answer carries no reward and no
observation, leaves its concept unasked and is asked again after a backoff; an engine that
keeps failing pauses the crawl, then stops the run.

In-process and network-free: a scripted engine, a crawler that fetches nothing, a real
database and a real policy."""
import asyncio
import math
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cache.db import MetaDB, QueryRow
from explorer.config import Config, apply_overrides
from explorer.engines.base import Engine, SearchOutcome, SearchWatch
from explorer.errors import SearchUnavailable
from explorer.run.loop import Explorer
from explorer.records import Query, SearchResult
from explorer.session import RunDir
from policies.registry import make_policy

CONCEPTS = [f"concept {i}" for i in range(300)]   # never all asked: no repeats


class ScriptedEngine(Engine):
    """Fails the searches `fails(text, try)` says; answers the others with one result, or none."""

    name = "scripted"

    def __init__(self, fails, empty=frozenset()):
        self.fails = fails
        self.empty = empty
        self.tries: dict[str, int] = {}

    async def search(self, query: str, max_results: int, page: int = 1, backend: str = "") -> SearchOutcome:
        n = self.tries.get(query, 0)
        self.tries[query] = n + 1
        if self.fails(query, n):
            return SearchOutcome([], error="rate limited: HTTP 429", retryable=True, attempts=3)
        if query in self.empty:
            return SearchOutcome([])            # answered: the concept gives nothing
        return SearchOutcome([SearchResult(image=f"http://127.0.0.1:9/{n}.jpg", title=query)])


class NoFetch:
    async def crawl(self, items):
        return []


def explorer_for(tmp: Path, engine, *sets: str) -> Explorer:
    cfg = apply_overrides(Config(), ["crawl.queries_per_round=6", "crawl.search_reasks=2",
                                     "crawl.search_fail_streak=1000", "crawl.search_pause_s=0",
                                     "crawl.search_patience_s=3600", "policy.name=random", *sets])
    emb = np.random.default_rng(0).normal(size=(len(CONCEPTS), 8)).astype(np.float32)
    policy = make_policy("random", CONCEPTS, emb, cfg.policy, seed=1)
    return Explorer(cfg, RunDir(tmp / "run"), MetaDB(tmp / "explore.db"), engine, NoFetch(), policy,
                    learner=None, budget=None)


async def one_round(ex: Explorer, round_: int):
    await ex.crawl_round(round_)
    outcomes = ex.score_round(round_, {})
    ex.policy.update(outcomes)
    return outcomes


def rows(ex: Explorer) -> list[QueryRow]:
    return ex.db.queries()


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 200), max_size=60), st.integers(0, 2**16))
def test_a_failed_search_is_no_evidence_and_is_asked_again_after_a_backoff(failing, salt):
    """Any pattern of failed tries: failed rows get no reward and no observation, their concept
    is not asked until asked again, and the k-th failure of a query is asked again 2**(k-1)
    rounds later (sooner if the policy picks the unasked concept itself), at most
    crawl.search_reasks times."""
    def fails(text, n):
        return zlib.crc32(f"{text}|{n}|{salt}".encode()) % 201 in failing

    rounds = 8
    with tempfile.TemporaryDirectory() as tmp:
        ex = explorer_for(Path(tmp), ScriptedEngine(fails))

        async def go():
            for r in range(rounds):
                await one_round(ex, r)
                # after each round: a concept whose search waits for a retry is not asked
                waiting = {q.concept for q in ex.db.queries(status="retry")}
                assert not any(ex.policy.asked[ex.policy.index[c]] for c in waiting)
        asyncio.run(go())
        all_rows = rows(ex)
        ex.db.close()

    answered = [q for q in all_rows if q.status not in ("failed", "retry")]
    failed = [q for q in all_rows if q.status in ("failed", "retry")]
    assert all(q.reward is None and q.n_kept is None for q in failed)
    assert all(q.reward is not None for q in answered)
    # one observation per answered query, none per failed one
    assert sorted(ex.policy.obs_concept) == sorted(ex.policy.index[q.concept] for q in answered)
    by_text: dict[str, list[QueryRow]] = {}
    for q in all_rows:
        by_text.setdefault(q.text, []).append(q)
    for text, chain in by_text.items():
        for k, (q, nxt) in enumerate(zip(chain, chain[1:]), start=1):
            assert q.status == "failed" and q.error, "only a failure is asked again"
            assert 1 <= nxt.round - q.round <= 2 ** (k - 1), (text, chain)
        last = chain[-1]
        if last.status == "retry":        # still waiting: its turn is after the last round
            assert last.round + 2 ** (len(chain) - 1) >= rounds
        assert len(chain) <= 1 + 2, "asked again more than crawl.search_reasks times"
        if len(chain) == 3 and last.status in ("failed", "retry"):
            assert last.status == "failed", "given up after crawl.search_reasks"


def test_an_empty_answer_is_an_observation_a_failure_is_not():
    """Zero results from an engine that answered: the concept gives nothing (the floor);
    an error: nothing is known. The round reports the failure."""
    with tempfile.TemporaryDirectory() as tmp:
        ex = explorer_for(Path(tmp), None, "crawl.queries_per_round=4")

        def first(n, *args):        # the policy's choice, made plain: concepts 0 to n-1
            ex.policy.asked[:n] = True
            return [Query(c, c) for c in CONCEPTS[:n]]
        ex.policy.sample_queries = first
        ex.engine = ScriptedEngine(lambda text, n: text == CONCEPTS[0] and n == 0,
                                   empty={CONCEPTS[1]})
        outcomes = asyncio.run(one_round(ex, 0))
        status = {q.concept: q.status for q in rows(ex)}
        ex.db.close()
    assert {o.concept for o in outcomes} == set(CONCEPTS[1:4])
    assert [o.reward for o in outcomes if o.concept == CONCEPTS[1]] == [ex.cfg.reward.floor]
    assert status[CONCEPTS[0]] == "retry" and not ex.policy.asked[0]
    assert ex.policy.asked[1]


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


@given(st.integers(1, 6), st.floats(0.01, 5), st.floats(0.01, 20), st.floats(0, 200),
       st.lists(st.floats(0, 3), min_size=1, max_size=40))
def test_a_down_engine_pauses_longer_each_time_and_is_given_up_within_patience(
        streak, pause_s, pause_max_s, patience_s, gaps):
    """Failures only: the engine is down after `streak` of them; pauses double up to their cap
    and never run past the patience; it is given up on once down for the patience."""
    t = FakeTime()
    watch = SearchWatch(streak, pause_s, pause_max_s, patience_s, clock=t.clock, sleep=t.sleep)

    async def go():
        for gap in gaps:
            t.now += gap
            watch.failed("HTTP 503")
            if not watch.down:
                continue
            if watch.out_of_patience():
                assert watch.down_for() >= patience_s
                return True
            await watch.pause()
            assert watch.down_for() <= patience_s + 1e-9
        return False
    given_up = asyncio.run(go())
    pauses = t.slept
    for i, (a, b) in enumerate(zip(pauses, pauses[1:])):
        assert b <= min(2 * a, pause_max_s) + 1e-9 or math.isclose(b, 2 * a)
    assert all(p <= pause_max_s + 1e-9 for p in pauses)
    assert given_up or t.now < patience_s + sum(gaps) + 1e-9


def test_an_answer_ends_the_downtime():
    t = FakeTime()
    watch = SearchWatch(2, 1.0, 8.0, 100.0, clock=t.clock, sleep=t.sleep)
    watch.failed("x")
    watch.failed("x")
    assert watch.down and watch.next_pause() == 1.0
    asyncio.run(watch.pause())
    assert not watch.down and watch.next_pause() == 2.0
    watch.failed("x")
    assert watch.down, "after a pause one failure is enough (a probe)"
    watch.answered()
    assert not watch.down and watch.down_for() == 0 and watch.next_pause() == 1.0
    watch.failed("x")
    watch.round_failed()
    assert watch.down, "a round whose every search failed"


def test_past_patience_the_crawl_stops_with_one_line_and_the_queries_stay_pending():
    with tempfile.TemporaryDirectory() as tmp:
        ex = explorer_for(Path(tmp), ScriptedEngine(lambda text, n: True),
                          "crawl.search_fail_streak=2", "crawl.search_patience_s=0.2",
                          "crawl.search_pause_s=0.05", "crawl.queries_per_round=12")
        with pytest.raises(SearchUnavailable) as e:
            asyncio.run(ex.crawl_round(0))
        statuses = [q.status for q in rows(ex)]
        kinds = [ev["kind"] for ev in ex.db.events()]
        ex.db.close()
    assert len(str(e.value).splitlines()) == 1 and "exit code 3" in str(e.value)
    assert e.value.exit_code == 3
    assert "pending" in statuses and set(statuses) <= {"pending", "retry"}
    assert "search_paused" in kinds and kinds[-1] == "search_unavailable"


def test_after_a_pause_one_search_at_a_time_probes_the_engine():
    """A burst after each pause would fail whole batches of queries while the engine is still down
    (and let a round end without the patience ever being reached)."""
    t = FakeTime()
    watch = SearchWatch(2, 1.0, 8.0, 100.0, clock=t.clock, sleep=t.sleep)
    assert watch.admit() and watch.admit()          # up: no limit
    watch.failed("x")
    watch.failed("x")
    assert not watch.admit()                        # down
    asyncio.run(watch.pause())
    assert watch.admit() and not watch.admit()      # one probe, the rest wait for it
    watch.failed("x")
    assert watch.down and not watch.admit()
    asyncio.run(watch.pause())
    assert watch.admit()
    watch.answered()
    assert watch.admit() and watch.admit()          # up again: no limit
