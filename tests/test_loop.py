"""The explore loop end to end on the sandbox web, in-process and small."""
import json
import sqlite3

import pytest
import torch

from explorer.assemble import _drive, build, sandbox_for
from explorer.config import SANDBOX_PRESET, Config, apply_overrides
from explorer.engines.base import Engine, SearchOutcome
from explorer.session import RunDir

SMALL = [
    "crawl.queries_per_round=4", "crawl.results_per_query=8", "train.steps_per_round=3",
    "train.batch_size=8", "eval.progress_max_train=60", "eval.progress_max_test=40",
]


def small_config(tmp_path, rounds: int, *extra: str) -> tuple[RunDir, Config]:
    run = RunDir(tmp_path / "run")
    cfg = apply_overrides(Config(), SANDBOX_PRESET + SMALL + [
        f"run.run_dir={run.root}", f"run.rounds={rounds}", "run.hours=1",
        f"run.data_root={tmp_path / 'data'}", "run.target=sandbox-flowers", *extra])
    run.save_config(cfg)
    return run, cfg


def run_rounds(run: RunDir, cfg: Config, engine=None):
    """Build and drive the loop like `explore run`; returns (explorer, learner step)."""
    with sandbox_for(cfg) as sandbox:
        explorer, parts = build(run, cfg, sandbox, console=_Quiet(), quiet=True)
        if engine is not None:
            explorer.engine = engine
        try:
            _drive(explorer)
            return explorer, parts.learner.trainer.step
        finally:
            parts.close()


class _Quiet:
    def print(self, *a, **k):
        pass


def db_rows(run: RunDir, sql: str):
    with sqlite3.connect(run.db_path) as con:
        return con.execute(sql).fetchall()


def test_rounds_then_resume_continue_without_asking_again(tmp_path):
    run, cfg = small_config(tmp_path, rounds=2)
    _, step = run_rounds(run, cfg)
    assert step == 2 * 3
    rounds = run.read_rounds()
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["kept"] > 0 for r in rounds)
    queries = db_rows(run, "SELECT round, concept, text, status, reward FROM queries")
    assert len(queries) == 8 and all(q[3] == "done" and q[4] is not None for q in queries)
    # every attempt has one outcome; every kept image has a file and a reward
    images = db_rows(run, "SELECT path, reward FROM images")
    assert images and all(r is not None for _, r in images)
    assert all((run.cache_dir(cfg) / p).exists() for p, _ in images)
    assert run.latest_checkpoint.exists()

    # the same run, two more rounds: the step and the round number continue
    cfg = apply_overrides(run.load_config(), ["run.rounds=4"])
    run.save_config(cfg)
    urls_before = {u for (u,) in db_rows(run, "SELECT url FROM attempts")}
    _, step = run_rounds(run, cfg)
    assert step == 4 * 3
    assert [r["round"] for r in run.read_rounds()] == [0, 1, 2, 3]
    texts = [t for (t,) in db_rows(run, "SELECT text FROM queries")]
    assert len(texts) == 16 and len(set(texts)) == 16, "a query was asked twice"
    # nothing fetched twice: an URL appears in more than one attempt row only for another query
    dup = db_rows(run, "SELECT url, query_id, COUNT(*) FROM attempts GROUP BY url, query_id HAVING COUNT(*) > 1")
    assert dup == []
    assert urls_before <= {u for (u,) in db_rows(run, "SELECT url FROM attempts")}
    ck = torch.load(run.latest_checkpoint, map_location="cpu", weights_only=True)
    assert ck["step"] == 12 and json.loads(ck["extra"]["explore"]["policy"])


class DeadEngine(Engine):
    name = "dead"

    def __init__(self):
        self.calls = 0

    async def search(self, query: str, max_results: int) -> SearchOutcome:
        self.calls += 1
        return SearchOutcome([], error="HTTP 503 after 5 tries", retryable=True, attempts=5)


def test_a_dead_engine_pauses_crawling_not_training(tmp_path):
    run, cfg = small_config(tmp_path, rounds=2)
    engine = DeadEngine()
    _, step = run_rounds(run, cfg, engine=engine)
    assert engine.calls == 8
    assert step == 2 * 3, "training went on on the target's own images"
    statuses = db_rows(run, "SELECT status, reward, error FROM queries")
    assert all(s == "failed" and r == cfg.reward.floor and "503" in e for s, r, e in statuses)
    events = db_rows(run, "SELECT kind FROM events WHERE kind='search_failed'")
    assert len(events) == 8
    assert [r["kept"] for r in run.read_rounds()] == [0, 0]
