"""The explore loop: one round is DESIGN.md §2, read top to bottom.

    policy.sample -> queries -> engine.search -> crawler (download, prepare, dedup, store)
    -> rewards (current encoder) -> policy.update -> trainer.train_steps (MUG) -> checkpoint + log

Round t is scored and the policy updated before round t+1's queries are sampled, so no round
is chosen on stale rewards; crawling round t+1 then overlaps training on round t (training
runs in a worker thread while the event loop crawls). The database is touched from the
event-loop thread only.

What survives a kill -9, and where:
- the database (WAL) holds every query asked and every URL attempt, committed as they finish;
  a resumed round re-asks nothing (search results are cached) and re-fetches nothing;
- the checkpoint holds the model, optimiser, policy state and the last round fully done; a round
  cut short is trained again from that checkpoint on the images it already has.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
import numpy as np
from rich.console import Console

from explorer.config import Config
from explorer.crawl import CrawlItem
from explorer.learner import RoundImages
from explorer.progress import RunProgress
from explorer.records import Outcome, QueryOutcome
from explorer.session import Budget, RunDir


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


class StopRequested(Exception):
    pass


class Explorer:
    """Drives rounds until the budget, the round cap or the image cap is reached, or a stop is
    requested. Every part is handed in (see `explorer.build`), so each can be replaced in tests."""

    def __init__(self, cfg: Config, run: RunDir, db, engine, crawler, policy, learner,
                 budget: Budget, descriptors: list[str] = (), progress=None):
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
                images = self.round_images(round_)
                rewards = await asyncio.to_thread(self.learner.score, images.candidates,
                                                  self.background_paths())
                outcomes = self.score_round(round_, rewards)
                await asyncio.to_thread(self.policy.update, outcomes)
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
        if not queries:  # a resumed round keeps the queries it already chose
            pairs = self.policy.sample_queries(self.cfg.crawl.queries_per_round, self.descriptors,
                                               self.cfg.policy.descriptor_share)
            with self.db.transaction():
                for concept, text in pairs:
                    self.db.add_query(round_, concept, text, self.engine.name)
            queries = self.db.queries(round=round_)
        todo = [q for q in queries if q["status"] not in ("done", "failed")]
        self.progress.crawl_started(round_, len(todo))
        semaphore = asyncio.Semaphore(8)
        fetched = 0

        async def one(q) -> None:
            nonlocal fetched
            async with semaphore:
                outcome = await self.engine.search(q["text"], self.cfg.crawl.results_per_query)
            if outcome.error and not outcome.results:
                self.progress.searched(0)
                self.db.set_query_status(q["id"], "failed", error=outcome.error, n_results=0)
                self.db.log_event("search_failed", query=q["text"], error=outcome.error,
                                  attempts=outcome.attempts)
                return
            self.db.set_query_status(q["id"], "searched", n_results=len(outcome.results))
            self.progress.searched(len(outcome.results))
            items = [CrawlItem(r.image, r.title, q["id"], round_) for r in outcome.results]
            attempts = await self.crawler.crawl(items)
            fetched += len(attempts)
            self.progress.fetched(len(attempts))
            if any(a.outcome == Outcome.DISK_FULL for a in attempts):
                return  # stays "searched": a resumed run fetches these once space returns
            self.db.set_query_status(q["id"], "done")

        await asyncio.gather(*(one(q) for q in todo))
        self.db.set_round_status(round_, "crawled")
        return {"queries": len(queries), "fetched": fetched, "seconds": time.monotonic() - started}

    # ---- train: the images the learner gets ---------------------------------------------------
    def round_images(self, round_: int) -> RoundImages:
        """This round's kept images, and replay: the best-rewarded images of earlier rounds."""
        root = self.crawler.store.root

        def triple(row: dict) -> tuple[str, str, str]:
            return row["sha256"], str(root / row["path"]), row["caption"] or ""

        candidates = [triple(r) for r in self.db.images_in_round(round_)]
        replay = [triple(r) for r in self.db.best_images(before_round=round_,
                                                         limit=self.cfg.train.replay_size)]
        return RoundImages(candidates, replay)

    # ---- reward: r(image), r(query) -----------------------------------------------------------
    def background_paths(self) -> list[str]:
        """The web sample that centres the rewards (explorer.reward): images kept in the run's
        first round with any, the same every round (a stable centre; in the sandbox and with
        imagenet21k the first round's concepts are drawn uniformly)."""
        n = self.cfg.reward.background_images
        if (self.cfg.reward.centre != "web" and not self.cfg.reward.contrast) or n <= 0:
            return []
        first = self.db.first_round_with_images()
        if first is None:
            return []
        root = self.crawler.store.root
        return [str(root / row["path"]) for row in self.db.images_in_round(first)[:n]]

    def score_round(self, round_: int, image_reward: dict[str, float]) -> list[QueryOutcome]:
        """Turn the learner's image rewards into per-query rewards, stored in the database."""
        from explorer.reward import query_rewards

        self.db.set_image_rewards(image_reward)
        outcomes = []
        per_query: dict[int, list[float]] = {}
        queries = self.db.queries(round=round_)
        for q in queries:
            shas = [row["sha256"] for row in self.db.images_for_query(q["id"])]
            per_query[q["id"]] = [image_reward[s] for s in shas if s in image_reward]
        rewards = query_rewards(per_query, self.floor(per_query))
        with self.db.transaction():
            for q in queries:
                r = rewards[q["id"]]
                kept = len(per_query[q["id"]])
                self.db.set_query_status(q["id"], q["status"], reward=r, n_kept=kept)
                outcomes.append(QueryOutcome(concept=q["concept"], text=q["text"], round=round_,
                                             n_results=q["n_results"] or 0, n_kept=kept, reward=r,
                                             image_rewards=per_query[q["id"]]))
        return outcomes

    def floor(self, per_query: dict[int, list[float]]) -> float:
        """The reward of a query that kept nothing (see RewardConfig.floor_mode)."""
        scored = [float(np.mean(r)) for r in per_query.values() if r]
        if self.cfg.reward.floor_mode == "round_min" and scored:
            return min(scored)
        return self.cfg.reward.floor

    def _report(self, round_, crawled, outcomes, trained, seconds) -> RoundReport:
        rewards = [o.reward for o in outcomes]
        best = sorted(((o.concept, o.reward) for o in outcomes if o.n_kept), key=lambda x: -x[1])[:5]
        return RoundReport(
            round=round_, queries=len(outcomes), results=sum(o.n_results for o in outcomes),
            fetched=crawled["fetched"], kept=sum(o.n_kept for o in outcomes),
            mean_reward=float(np.mean(rewards)) if rewards else math.nan, best=best,
            train=trained,
            knn_acc=trained.get("knn_acc"), seconds=seconds,
            failed_queries=sum(1 for q in self.db.queries(round=round_) if q["status"] == "failed"),
            outcomes=self.db.outcome_counts_for_round(round_),
        )
