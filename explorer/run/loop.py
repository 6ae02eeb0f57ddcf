"""The explore loop: one round (ARCHITECTURE.md, "One round"), read top to bottom.

    policy.sample -> queries -> engine.search -> crawler (download, prepare, dedup, store)
    -> rewards (current encoder) -> policy.update -> trainer.train_steps (MUG) -> checkpoint + log

Round t is scored and the policy updated before round t+1's queries are sampled, so no round
is chosen on stale rewards; crawling round t+1 then overlaps training on round t (training
runs in a worker thread while the event loop crawls). The database is touched from the
event-loop thread only.

What survives a kill -9, and where:
- the database (WAL) holds every query asked and every URL attempt, committed as they finish;
  a resumed round re-asks nothing (search results are cached) and re-fetches nothing; a search
  the engine did not answer is a "retry" row, asked again in a later round (resumed or not);
- the checkpoint holds the model, optimiser, policy state and the last round fully done; a round
  cut short is trained again from that checkpoint on the images it already has.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Callable
import numpy as np
from rich.console import Console

from cache.db import ImageRow, QueryRow, RefreshItem, ScoredImage
from explorer.config import Config
from explorer.crawl.crawler import CrawlItem
from explorer.engines.base import SearchWatch
from explorer.errors import SearchUnavailable
from explorer.model.learner import RoundImages
from explorer.run.progress import RunProgress
from explorer.records import Query, QueryOutcome, UrlOutcome
from explorer.model.reward import query_rewards_by_round, round_query_rewards
from explorer.session import Budget, RunDir
from explorer.terminal import visible


@dataclass
class RoundReport:
    round: int
    queries: int
    results: int
    fetched: int
    kept: int
    mean_reward: float
    best: list[tuple[str, float]]
    train: dict
    knn_acc: float | None
    seconds: float
    failed_queries: int = 0
    outcomes: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"round": self.round, "queries": self.queries, "results": self.results,
                "fetched": self.fetched, "kept": self.kept, "mean_reward": self.mean_reward,
                "best": [[c, r] for c, r in self.best], "train": self.train,
                "knn_acc": self.knn_acc, "seconds": self.seconds,
                "failed_queries": self.failed_queries, "outcomes": self.outcomes}


UNANSWERED = ("failed", "retry")   # query statuses of searches the engine did not answer


class Explorer:
    """Drives rounds until the budget, the round cap or the image cap is reached, or a stop is
    requested. Every part is handed in (see `explorer.build`), so each can be replaced in tests."""

    def __init__(self, cfg: Config, run: RunDir, db, engine, crawler, policy, learner,
                 budget: Budget, descriptors: list[str] = (), progress=None,
                 after_round: list[Callable[[dict], None]] = ()):
        self.cfg = cfg
        self.rundir = run
        self.db = db
        self.engine = engine
        self.crawler = crawler
        self.policy = policy
        self.learner = learner
        self.budget = budget
        self.descriptors = list(descriptors)
        self.progress = progress or RunProgress(Console(quiet=True), quiet=True)
        self.stop_requested = False
        # called with each round's record once it is logged (the HTML report, TensorBoard); one
        # that raises is reported on the console and the run goes on: a view is never the data
        self.after_round = list(after_round)
        c = cfg.crawl
        self.search_watch = SearchWatch(c.search_fail_streak, c.search_pause_s,
                                        c.search_pause_max_s, c.search_patience_s)

    # ---- stopping ------------------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_requested = True

    def _should_start_round(self, round_: int) -> bool:
        if self.stop_requested or self.budget.exhausted():
            return False
        if self.cfg.run.rounds and round_ >= self.cfg.run.rounds:
            return False
        if self.cfg.run.max_images and self.db.image_stats()[0] >= self.cfg.run.max_images:
            return False
        return True

    # ---- the loop ------------------------------------------------------------------------
    def log_round(self, record: dict) -> None:
        self.db.finish_round(record["round"], info=record)
        self.rundir.append_round(record)

    def notify_round(self, record: dict) -> None:
        for observer in self.after_round:
            try:
                observer(record)
            except Exception as e:  # noqa: BLE001 - a report that fails must not stop the crawl
                self.progress.warn(f"after round {record['round']}: {getattr(observer, '__name__', observer)!s} "
                                   f"failed: {type(e).__name__}: {visible(str(e))[:200]}")

    def log_finished_round(self) -> None:
        """A resumed run: the last checkpointed round is in the logs (it may have been killed
        after the checkpoint, before the log lines)."""
        record = self.learner.last_report
        if record and record["round"] not in {r["round"] for r in self.rundir.read_rounds()}:
            self.log_round(record)

    async def run(self) -> int:
        """Run rounds; returns the number of the next round to do."""
        self.log_finished_round()
        round_ = self.learner.rounds_done
        if not self._should_start_round(round_):
            return round_
        crawl = asyncio.create_task(self.crawl_round(round_))
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                crawled = await crawl
                started = time.monotonic()
                fresh = await self.refresh_rewards(round_)   # before replay is drawn from them
                images = self.round_images(round_)
                rewards = await asyncio.to_thread(self.learner.score, images.candidates,
                                                  self.background_paths())
                outcomes = self.score_round(round_, rewards)
                await asyncio.to_thread(self.update_policy, outcomes, fresh)
                next_crawl = None
                if self._should_start_round(round_ + 1):
                    next_crawl = asyncio.create_task(self.crawl_round(round_ + 1))
                trained = await asyncio.to_thread(self.learner.train_round, round_, images)
                report = self._report(round_, crawled, outcomes, trained,
                                      time.monotonic() - started + crawled["seconds"])
                # the checkpoint carries the round's record: a kill between the two writes is
                # mended on resume (`log_finished_round`), never logged twice or lost
                self.learner.save(round_, self.policy.state_dict(), report.to_json())
                self.log_round(report.to_json())
                self.budget.tick()
                self.progress.round_done(report)
                await asyncio.to_thread(self.notify_round, report.to_json())
                round_ += 1
                if next_crawl is None:
                    return round_
                if self.stop_requested:
                    next_crawl.cancel()
                    await asyncio.gather(next_crawl, return_exceptions=True)
                    return round_
                crawl = next_crawl
        finally:
            heartbeat.cancel()
            self.budget.tick()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self.budget.tick()
            if self.budget.exhausted():
                self.request_stop()

    # ---- crawl: policy.sample -> engine.search -> crawler ----------------------------------
    async def crawl_round(self, round_: int) -> dict:
        started = time.monotonic()
        self.db.start_round(round_)
        queries = self.db.queries(round=round_)
        # a resumed round keeps the queries it already chose, and asks its failed ones again at
        # once (the run may have stopped because the engine was unavailable)
        todo = [q for q in queries if q.status in ("pending", "searched", "retry")]
        if not queries:
            self.choose_queries(round_)
            queries = self.db.queries(round=round_)
            todo = queries
        self.progress.crawl_started(round_, len(todo))
        semaphore = asyncio.Semaphore(self.cfg.crawl.search_concurrency)
        watch = self.search_watch

        async def one(q) -> str:
            async with semaphore:
                if not watch.admit():
                    return "skipped"  # stays pending: asked once the pause is over
                outcome = await self.engine.search(q.text, self.cfg.crawl.results_per_query,
                                                   page=q.page, backend=q.backend)
            if outcome.error and not outcome.results:
                watch.failed(outcome.error)
                self.search_failed(q, outcome)
                return "failed"
            watch.answered()   # an answer with no results is one too: the concept gives nothing
            self.db.set_query_status(q.id, "searched", n_results=len(outcome.results))
            self.progress.searched(len(outcome.results))
            items = [CrawlItem(r.image, r.title, q.id, round_) for r in outcome.results]
            attempts = await self.crawler.crawl(items)
            self.progress.fetched(len(attempts))
            if any(a.outcome == UrlOutcome.DISK_FULL for a in attempts):
                return "answered"  # stays "searched": a resumed run fetches these once space returns
            self.db.set_query_status(q.id, "done")
            return "answered"

        while todo:  # until every query is asked: skipped ones (engine down, or behind a probe) again
            ends = await asyncio.gather(*(one(q) for q in todo))
            if "failed" in ends and "answered" not in ends:
                watch.round_failed()
            if watch.down:
                await self.pause_search(round_)
            todo = self.db.queries(round=round_, status="pending")
        self.db.set_round_status(round_, "crawled")
        return {"queries": len(queries), "seconds": time.monotonic() - started}

    # ---- failed searches: unavailable is not useless ---------------------------------------
    def choose_queries(self, round_: int) -> None:
        """The round's queries: failed searches whose wait is over first, then the policy's
        (re-asks of concepts that paid off, and new concepts)."""
        n = self.cfg.crawl.queries_per_round
        again = self.due_retries(round_)[:n]
        self.policy.asked_again([as_query(q) for q in again])
        picked = self.policy.sample_queries(n - len(again), self.descriptors,
                                            self.cfg.policy.descriptor_share)
        # a waiting query is not asked, so the policy may pick it itself: then it is asked now
        chosen = {(q.concept, q.refinement) for q in picked}
        again += [q for q in self.db.queries(status="retry")
                  if (q.concept, q.refinement) in chosen and q not in again]
        with self.db.transaction():
            for q in again:   # the old row stays as the record of a failure
                self.db.set_query_status(q.id, "failed")
                if (q.concept, q.refinement) not in chosen:
                    self.add_query(round_, as_query(q))
            for q in picked:
                self.add_query(round_, q)

    def add_query(self, round_: int, q: Query) -> None:
        self.db.add_query(round_, q.concept, q.text, self.engine.name, refinement=q.refinement,
                          page=q.page, backend=q.backend)

    def failures_of(self, q: QueryRow) -> int:
        """How many times the search `q` asks (its text, page and backend) has failed in this run."""
        key = (q.text, q.page, q.backend)
        return sum(1 for status in ("failed", "retry") for r in self.db.queries(status=status)
                   if (r.text, r.page, r.backend) == key)

    def due_retries(self, round_: int) -> list[QueryRow]:
        """Failed searches to ask again in `round_`: the k-th failure waits 2**(k-1) rounds."""
        return [q for q in self.db.queries(status="retry")
                if round_ - q.round >= 2 ** min(self.failures_of(q) - 1, 6)]

    def search_failed(self, q: QueryRow, outcome) -> None:
        """No answer is no evidence: the query gets no reward, the policy no observation and the
        concept (or refinement) is not asked; it is asked again in a later round,
        `crawl.search_reasks` times."""
        again = self.failures_of(q) < self.cfg.crawl.search_reasks
        self.db.set_query_status(q.id, "retry" if again else "failed", error=outcome.error,
                                 n_results=0)
        self.db.log_event("search_failed", query=q.text, refinement=q.refinement,
                          error=outcome.error, attempts=outcome.attempts, again=again)
        if again:
            self.policy.search_failed([as_query(q)])
        self.progress.searched(0)

    async def pause_search(self, round_: int) -> None:
        """The engine is down: pause the crawl (training goes on), or stop the run past the
        patience. Nothing is lost either way: unasked queries stay pending in the database."""
        watch = self.search_watch
        if watch.out_of_patience():
            self.db.log_event("search_unavailable", round=round_, down_s=watch.down_for(),
                              error=watch.last_error)
            raise SearchUnavailable(
                f"search engine {self.engine.name} unavailable: every search failed for "
                f"{watch.down_for():.0f} s, past crawl.search_patience_s="
                f"{self.cfg.crawl.search_patience_s:g} (last: {visible(watch.last_error)}); "
                f"stopped with exit code 3, `explore resume {self.rundir.root}` continues the run")
        delay = watch.next_pause()
        self.db.log_event("search_paused", round=round_, seconds=delay, down_s=watch.down_for(),
                          error=watch.last_error)
        self.progress.search_paused(self.engine.name, delay, watch.last_error)
        await watch.pause()

    # ---- train: the images the learner gets ---------------------------------------------------
    def round_images(self, round_: int) -> RoundImages:
        """This round's kept images, and replay: earlier rounds' images drawn by reward."""
        candidates = [self._triple(r) for r in self.db.images_in_round(round_)]
        replay = [self._triple(r) for r in self.replay_rows(round_)]
        return RoundImages(candidates, replay)

    def _triple(self, row: ImageRow | ScoredImage | RefreshItem) -> tuple[str, str, str]:
        """(sha256, path, caption) of an image row, as the learner takes it."""
        return row.sha256, str(self.crawler.store.root / row.path), row.caption or ""

    def replay_rows(self, round_: int) -> list[ScoredImage]:
        """Up to train.replay_size images of earlier rounds, drawn with p ∝ exp(z/τ) of their
        freshest reward (explorer.model.train.sample_replay); the same draw for a resumed round."""
        from explorer.model.train import sample_replay

        n, mean, std = self.db.reward_moments(before_round=round_)
        rng = np.random.default_rng([self.cfg.run.seed, round_])
        return sample_replay(self.db.scored_images(before_round=round_),
                             min(self.cfg.train.replay_size, n), self.cfg.train.replay_temperature,
                             mean, std, rng)

    # ---- fresh rewards: earlier rounds re-scored by the current encoder -----------------------
    async def refresh_rewards(self, round_: int) -> "FreshRewards":
        """Every reward.refresh_every rounds, re-score with the current encoder (the scoring
        path of a round) a bounded sample of every scored query's kept images and the replay
        pool; store the fresh image and query rewards (one transaction: a kill leaves the old
        ones, and the resumed round, with the same encoder, computes the same again).
        Returns the fresh query rewards by (concept, round, refinement), and their sampled
        images' fresh rewards, for the policy."""
        every = self.cfg.reward.refresh_every
        if not every or round_ == 0 or round_ % every:
            return FreshRewards()
        started = time.monotonic()
        sample = self.db.refresh_sample(before_round=round_, per_query=self.cfg.reward.refresh_per_query)
        items = {r.sha256: self._triple(r) for r in sample}
        for row in self.replay_rows(round_):
            items.setdefault(row.sha256, self._triple(row))
        image_reward = await asyncio.to_thread(self.learner.score, list(items.values()),
                                               self.background_paths())
        queries = [q for q in self.db.queries() if q.round < round_ and q.reward is not None]
        query_reward = self.fresh_query_rewards(queries, sample, image_reward)
        with self.db.transaction():
            self.db.set_fresh_rewards(round_, image_reward, query_reward)
            self.db.log_event("rewards_refreshed", round=round_, images=len(image_reward),
                              queries=len(query_reward), seconds=time.monotonic() - started)
        images: dict[tuple[str, int, str], list[float]] = {}
        key_of = {q.id: (q.concept, q.round, q.refinement) for q in queries}
        for row in sample:
            if row.query_id in key_of and row.sha256 in image_reward:
                images.setdefault(key_of[row.query_id], []).append(image_reward[row.sha256])
        return FreshRewards(observation_rewards(queries, query_reward), images)

    def fresh_query_rewards(self, queries: list[QueryRow], sample: list[RefreshItem],
                            image_reward: dict[str, float]) -> dict[int, float]:
        """r(query) from its sampled images' fresh rewards; the floor, on the fresh scale and
        per round as in `score_round`, for a query that kept none."""
        per_query: dict[int, list[float]] = {q.id: [] for q in queries}
        for row in sample:
            if row.query_id in per_query and row.sha256 in image_reward:
                per_query[row.query_id].append(image_reward[row.sha256])
        return query_rewards_by_round(per_query, {q.id: q.round for q in queries},
                                      self.cfg.reward)

    def update_policy(self, outcomes: list[QueryOutcome], fresh: dict[tuple[str, int, str], float]) -> None:
        """The policy learns this round's outcomes, its earlier observations refreshed first
        (one fit, on rewards of one encoder)."""
        if fresh:
            self.policy.refresh_rewards(fresh, getattr(fresh, "images", None))
        self.policy.update(outcomes)

    # ---- reward: r(image), r(query) -----------------------------------------------------------
    def background_paths(self) -> list[str]:
        """The web sample that centres the rewards (explorer.model.reward): images kept in the run's
        first round with any, the same every round (a stable centre; in the sandbox and with
        imagenet21k the first round's concepts are drawn uniformly)."""
        n = self.cfg.reward.background_images
        if (self.cfg.reward.centre != "web" and not self.cfg.reward.contrast) or n <= 0:
            return []
        first = self.db.first_round_with_images()
        if first is None:
            return []
        root = self.crawler.store.root
        return [str(root / row.path) for row in self.db.images_in_round(first)[:n]]

    def score_round(self, round_: int, image_reward: dict[str, float]) -> list[QueryOutcome]:
        """Turn the learner's image rewards into per-query rewards, stored in the database."""
        self.db.set_image_rewards(image_reward)
        outcomes = []
        per_query: dict[int, list[float]] = {}
        # a failed search is not scored: no answer is no evidence that the concept is useless
        queries = [q for q in self.db.queries(round=round_) if q.status not in UNANSWERED]
        for q in queries:
            shas = [row.sha256 for row in self.db.images_for_query(q.id)]
            per_query[q.id] = [image_reward[s] for s in shas if s in image_reward]
        rewards = round_query_rewards(per_query, self.cfg.reward)
        with self.db.transaction():
            for q in queries:
                r = rewards[q.id]
                kept = len(per_query[q.id])
                self.db.set_query_status(q.id, q.status, reward=r, n_kept=kept)
                outcomes.append(QueryOutcome(concept=q.concept, text=q.text, round=round_,
                                             n_results=q.n_results or 0, n_kept=kept, reward=r,
                                             image_rewards=per_query[q.id],
                                             refinement=q.refinement))
        return outcomes

    def _report(self, round_, crawled, outcomes, trained, seconds) -> RoundReport:
        rewards = [o.reward for o in outcomes]
        best = sorted(((o.concept, o.reward) for o in outcomes if o.n_kept), key=lambda x: -x[1])[:5]
        # from the database, not this process's crawl: a resumed round was crawled before the stop
        attempts = self.db.outcome_counts_for_round(round_)
        return RoundReport(
            round=round_, queries=len(outcomes), results=sum(o.n_results for o in outcomes),
            fetched=sum(attempts.values()), kept=sum(o.n_kept for o in outcomes),
            mean_reward=float(np.mean(rewards)) if rewards else math.nan, best=best,
            train=trained,
            knn_acc=trained.get("knn_acc"), seconds=seconds,
            failed_queries=sum(1 for q in self.db.queries(round=round_) if q.status in UNANSWERED),
            outcomes=attempts,
        )


def as_query(row: QueryRow) -> Query:
    """A queries row as the policy's Query."""
    return Query(row.concept, row.text, row.refinement, page=row.page, backend=row.backend)


class FreshRewards(dict):
    """Fresh query rewards by (concept, round, refinement), as `observation_rewards` keys them;
    `images`: the fresh rewards of each one's sampled images (what re-asks are judged on)."""

    def __init__(self, rewards: dict | None = None,
                 images: dict[tuple[str, int, str], list[float]] | None = None) -> None:
        super().__init__(rewards or {})
        self.images = images or {}


def observation_rewards(queries: list[QueryRow], query_reward: dict[int, float]) -> dict[tuple[str, int, str], float]:
    """Query rewards keyed as the policy's observations are, (concept, round, refinement); the
    mean where one was asked more than once in a round."""
    by_key: dict[tuple[str, int, str], list[float]] = {}
    for q in queries:
        if q.id in query_reward:
            by_key.setdefault((q.concept, q.round, q.refinement), []).append(query_reward[q.id])
    return {key: float(np.mean(r)) for key, r in by_key.items()}
