"""Fresh rewards (issue #17, item 3): earlier rounds re-scored by the current encoder, the policy
conditioned on them, replay drawn by reward. A fake learner stands for the encoder: its rewards
change with `version`, as a training encoder's do between rounds."""
import asyncio
import hashlib
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cache.db import MetaDB
from explorer.config import Config, apply_overrides
from explorer.run.loop import Explorer
from explorer.records import QueryOutcome
from explorer.session import RunDir
from explorer.model.train import sample_replay
from policies.registry import make_policy


def encoder_reward(sha: str, version: int) -> float:
    """What the fake encoder of `version` says of an image: differs from one version to the next."""
    return ((int(sha[:8], 16) * (version + 7)) % 997) / 997.0 - 0.5


class FakeLearner:
    def __init__(self):
        self.version = 0
        self.scored: list[list[str]] = []   # the shas of each `score` call

    def score(self, candidates, background=()):
        self.scored.append([sha for sha, _, _ in candidates])
        return {sha: encoder_reward(sha, self.version) for sha, _, _ in candidates}


def sha_of(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def fill(db: MetaDB, layout: list[list[int]], learner: FakeLearner) -> None:
    """Rounds of scored queries: layout[round][i] = images kept by query i of that round; each
    image and query scored by the encoder of its round, as `score_round` does."""
    with db.transaction():
        for round_, queries in enumerate(layout):
            learner.version = round_
            for i, n_images in enumerate(queries):
                qid = db.add_query(round_, f"concept {round_}-{i}", f"concept {round_}-{i}", "sandbox")
                shas = [sha_of(round_, i, j) for j in range(n_images)]
                for vec, sha in enumerate(shas):
                    db.add_image(sha, f"{sha[:2]}/{sha}.jpg", 8, 8, 8, 8, query_id=qid, round=round_,
                                 vec_id=db.next_vec_id())
                rewards = [encoder_reward(s, round_) for s in shas]
                db.set_image_rewards(dict(zip(shas, rewards)))
                db.set_query_status(qid, "done", reward=float(np.mean(rewards)) if shas else -1.0,
                                    n_kept=n_images)


def explorer_for(root: Path, learner, policy=None, *overrides: str) -> Explorer:
    run = RunDir(root / "run")
    cfg = apply_overrides(Config(), [f"run.run_dir={run.root}", *overrides])
    db = MetaDB(root / "explore.db")
    crawler = SimpleNamespace(store=SimpleNamespace(root=root / "cache"))
    return Explorer(cfg, run, db, engine=None, crawler=crawler, policy=policy, learner=learner,
                    budget=None)


def rows(db: MetaDB, sql: str, *args) -> list[dict]:
    return [dict(r) for r in db.conn.execute(sql, args)]


layouts = st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=4), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None)
@given(layout=layouts, per_query=st.integers(1, 5), replay_size=st.integers(0, 8))
def test_refresh_gives_every_scored_query_what_the_current_encoder_says(layout, per_query, replay_size):
    with tempfile.TemporaryDirectory() as tmp:
        learner = FakeLearner()
        ex = explorer_for(Path(tmp), learner, None, "reward.refresh_every=1",
                          f"reward.refresh_per_query={per_query}", f"train.replay_size={replay_size}",
                          "reward.floor_mode=round_min")
        fill(ex.db, layout, learner)
        before = {r["sha256"]: r["reward"] for r in rows(ex.db, "SELECT sha256, reward FROM images")}
        now = len(layout)
        learner.version = 99
        fresh = asyncio.run(ex.refresh_rewards(now))

        # bounded: at most per_query images of each query, plus the replay pool, scored once
        scored = learner.scored[0] if learner.scored else []
        assert len(scored) == len(set(scored))
        assert len(scored) <= sum(min(n, per_query) for r in layout for n in r) + replay_size
        for img in rows(ex.db, "SELECT * FROM images"):
            assert img["reward"] == before[img["sha256"]]          # its own round's reward stays
            if img["sha256"] in scored:
                assert img["fresh_reward"] == pytest.approx(encoder_reward(img["sha256"], 99))
                assert img["fresh_round"] == now
            else:
                assert img["fresh_reward"] is None

        queries = rows(ex.db, "SELECT * FROM queries")
        for round_ in range(now):
            of_round = [q for q in queries if q["round"] == round_]
            means = {}
            for q in of_round:
                shas = sorted(r.sha256 for r in ex.db.images_for_query(q["id"]))[:per_query]
                if shas:
                    means[q["id"]] = float(np.mean([encoder_reward(s, 99) for s in shas]))
            floor = min(means.values()) if means else ex.cfg.reward.floor
            for q in of_round:
                assert q["fresh_round"] == now
                assert q["fresh_reward"] == pytest.approx(means.get(q["id"], floor))
                assert fresh[(q["concept"], round_, "")] == pytest.approx(q["fresh_reward"])
        assert len(fresh) == len(queries)


def test_refresh_every_zero_or_off_round_changes_nothing(tmp_path):
    learner = FakeLearner()
    for every, round_ in (("0", 3), ("2", 3), ("2", 0)):
        ex = explorer_for(tmp_path, learner, None, f"reward.refresh_every={every}")
        if not ex.db.queries():
            fill(ex.db, [[3, 0], [2], [4]], learner)
        learner.version = 99
        assert asyncio.run(ex.refresh_rewards(round_)) == {}
        assert learner.scored == []
        assert rows(ex.db, "SELECT 1 FROM images WHERE fresh_reward IS NOT NULL "
                           "UNION ALL SELECT 1 FROM queries WHERE fresh_reward IS NOT NULL") == []
        ex.db.close()


def test_a_refresh_killed_before_its_commit_leaves_the_old_rewards(tmp_path, monkeypatch):
    learner = FakeLearner()
    ex = explorer_for(tmp_path, learner, None, "reward.refresh_every=1")
    fill(ex.db, [[3, 2], [4]], learner)
    learner.version = 99

    def killed(*a, **k):
        raise KeyboardInterrupt   # stands for the process dying after the rewards are written
    monkeypatch.setattr(ex.db, "log_event", killed)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(ex.refresh_rewards(2))
    assert learner.scored   # it got as far as scoring and writing
    assert rows(ex.db, "SELECT 1 FROM images WHERE fresh_reward IS NOT NULL "
                       "UNION ALL SELECT 1 FROM queries WHERE fresh_reward IS NOT NULL") == []


def test_the_policy_is_conditioned_on_refreshed_rewards(tmp_path):
    """After a refresh, the GP predicts what a GP that had seen the fresh rewards from the start
    predicts: none of the old encoder's values is left in it."""
    rng = np.random.default_rng(0)
    concepts = [f"concept {r}-{i}" for r in range(2) for i in range(4)] + [f"other {i}" for i in range(8)]
    emb = rng.normal(size=(len(concepts), 8)).astype(np.float32)
    cfg = Config()

    def outcomes(round_, reward):
        return [QueryOutcome(concept=f"concept {round_}-{i}", text=f"concept {round_}-{i}", round=round_,
                             n_results=4, n_kept=1, reward=reward(i), image_rewards=[])
                for i in range(4)]

    learner = FakeLearner()
    policy = make_policy("gp", concepts, emb, cfg.policy, seed=1)
    ex = explorer_for(tmp_path, learner, policy, "reward.refresh_every=1")
    fill(ex.db, [[2, 3, 1, 2]], learner)
    old = {q.concept: q.reward for q in ex.db.queries()}
    policy.update(outcomes(0, lambda i: old[f"concept 0-{i}"]))
    learner.version = 5
    fresh = asyncio.run(ex.refresh_rewards(1))
    assert fresh and all(fresh[(c, 0, "")] != pytest.approx(old[c]) for c, _, _ in fresh)
    ex.update_policy(outcomes(1, lambda i: 0.1 * i), fresh)
    assert policy.obs_reward[:4] == pytest.approx([fresh[(f"concept 0-{i}", 0, "")] for i in range(4)])

    seen_fresh = make_policy("gp", concepts, emb, cfg.policy, seed=1)
    seen_fresh.update(outcomes(0, lambda i: fresh[(f"concept 0-{i}", 0, "")]))
    seen_fresh.update(outcomes(1, lambda i: 0.1 * i))
    np.testing.assert_allclose(policy.mean, seen_fresh.mean, rtol=1e-6, atol=1e-9)


def test_replay_is_drawn_by_fresh_reward_not_cut_at_the_top(tmp_path):
    """round_images' replay pool favours high fresh rewards, yet images below the top-k cut are
    drawn too (a hard top-k always drew the same best ones); images rewarded high by their own
    round but low by a refresh are no longer favoured."""
    learner = FakeLearner()
    ex = explorer_for(tmp_path, learner, None, "train.replay_size=10", "reward.refresh_every=1")
    fill(ex.db, [[10] * 4], learner)
    # a refresh turns the ranking upside down: the fresh reward is minus the old one
    old = {r["sha256"]: r["reward"] for r in rows(ex.db, "SELECT sha256, reward FROM images")}
    with ex.db.transaction():
        ex.db.set_fresh_rewards(1, {s: -r for s, r in old.items()}, {})
    fresh_rank = sorted(old, key=lambda s: old[s])           # best fresh reward first
    top = set(fresh_rank[:10])
    counts = {s: 0 for s in old}
    for seed in range(60):
        ex.cfg.run.seed = seed
        replay = ex.round_images(1).replay
        assert len(replay) == 10 and len({s for s, _, _ in replay}) == 10
        for sha, _, _ in replay:
            counts[sha] += 1
    below_cut = sum(counts[s] for s in fresh_rank[10:])
    assert below_cut > 0                                     # not a hard top-k
    assert sum(counts[s] for s in top) > below_cut / 3        # 10 of 40 images get most draws
    best, worst = fresh_rank[:20], fresh_rank[20:]
    assert sum(counts[s] for s in best) > 2 * sum(counts[s] for s in worst)


class Row(NamedTuple):
    """A streamed row as sample_replay reads it (its `reward`), with an id to tell it by."""

    id: int
    reward: float


@settings(max_examples=60, deadline=None)
@given(rewards=st.lists(st.floats(-5, 5), min_size=1, max_size=300), n=st.integers(0, 400),
       temperature=st.floats(0.05, 10), seed=st.integers(0, 2**16))
def test_sample_replay_draws_distinct_rows_from_a_stream(rewards, n, temperature, seed):
    stream = (Row(i, r) for i, r in enumerate(rewards))   # read once, never held
    drawn = sample_replay(stream, n, temperature, float(np.mean(rewards)), float(np.std(rewards)),
                          np.random.default_rng(seed))
    ids = [d.id for d in drawn]
    assert len(ids) == min(n, len(rewards)) and len(set(ids)) == len(ids)


def test_sample_replay_inclusion_grows_with_reward():
    """Two halves, low and high: each high row is drawn more often than each low one, and a
    higher temperature evens them out."""
    rows_ = [Row(i, float(i >= 50)) for i in range(100)]

    def high_share(temperature):
        rng = np.random.default_rng(0)
        hits = np.zeros(100)
        for _ in range(200):
            for d in sample_replay(iter(rows_), 20, temperature, 0.5, 0.5, rng):
                hits[d.id] += 1
        assert hits[:50].sum() > 0                           # low rows are still drawn
        return hits[50:].sum() / hits.sum()

    sharp, flat = high_share(0.5), high_share(5.0)
    assert sharp > 0.8 and 0.5 < flat < sharp
