"""Re-asking what paid off (policies/refine.py): a concept's next page, another backend, a
descriptor; what each is expected to pay is measured in the run; failed refinements are asked
again; the scores model first asks only; all of it survives a resume."""
import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cache.db import MetaDB
from explorer.config import Config, PolicyConfig, apply_overrides
from explorer.engines.base import Engine, SearchOutcome
from explorer.run.loop import Explorer
from explorer.records import Query, QueryOutcome, SearchResult
from explorer.session import RunDir
from policies import refine
from policies.registry import make_policy
from policies.refine import Observed, Refinements

CONCEPTS = [f"c{i}" for i in range(200)]


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


EMB = unit(np.random.default_rng(0).normal(size=(len(CONCEPTS), 16)))


def outcome(concept, reward, rnd=0, refinement="", n_results=35):
    return QueryOutcome(concept=concept, text=concept, round=rnd, n_results=n_results, n_kept=5,
                        reward=reward, refinement=refinement)


def policy_with(name="gp", offer=None, **cfg):
    p = make_policy(name, CONCEPTS, EMB, PolicyConfig(**cfg), seed=0,
                    relevance={c: 1.0 for c in CONCEPTS[:50]} if name == "oracle" else None)
    p.offer = offer or Refinements(pages=True, backends=("bing",), max_page=3,
                                   descriptors={c: [f"wild {c}", f"garden {c}"] for c in CONCEPTS})
    return p


# -- what is offered ----------------------------------------------------------------------------

def test_options_are_the_next_page_each_unasked_backend_and_the_next_descriptor():
    offer = Refinements(pages=True, backends=("bing", "duckduckgo"), max_page=3,
                        descriptors={"rose": ["wild rose", "garden rose"]})
    first = offer.options("rose", set())
    assert [q.refinement for q in first] == ["page:2", "backend:bing", "backend:duckduckgo", "desc:wild rose"]
    assert first[0] == Query("rose", "rose", "page:2", page=2)
    assert first[1].backend == "bing" and first[1].page == 1 and first[1].text == "rose"
    assert first[3].text == "wild rose"
    later = offer.options("rose", {"page:2", "page:3", "backend:bing", "desc:wild rose"})
    assert [q.refinement for q in later] == ["backend:duckduckgo", "desc:garden rose"]  # page 4 > max_page
    assert Refinements().options("rose", set()) == []   # an engine without pages or backends


def test_page_change_and_yield_are_measured_and_shrunk_to_their_priors():
    nothing = refine.learn({})
    assert nothing.change == pytest.approx(refine.PRIOR_CHANGE)
    assert nothing.yields == pytest.approx(refine.PRIOR_YIELD)
    many = {i: Observed(z={"": 1.0, "page:2": -1.0, "page:3": -3.0},
                        kept={"": 30, "page:2": 15, "page:3": 15}) for i in range(200)}
    model = refine.learn(many)
    assert model.change["page"] == pytest.approx(-2.0, abs=0.05)       # each page pays 2 z less here
    assert model.yields["page"] == pytest.approx(0.75, abs=0.01)       # half, then all, of the page before
    assert model.change["desc"] == refine.PRIOR_CHANGE["desc"]
    assert model.z_none == 1.0                                         # the first asks' low tail
    good = {i: Observed(z={"": 0.0, "desc:x": 1.0}, kept={"": 20, "desc:x": 40}) for i in range(3)}
    model = refine.learn(good)
    assert refine.PRIOR_CHANGE["desc"] < model.change["desc"] < 1.0    # a few: shrunk
    assert refine.PRIOR_YIELD["desc"] < model.yields["desc"] < 2.0
    unrecorded = {i: Observed(z={"": 0.0, "desc:x": 1.0}) for i in range(9)}   # old states: no counts
    assert refine.learn(unrecorded).yields["desc"] == pytest.approx(refine.PRIOR_YIELD["desc"])


def model(change=None, yields=None, z_none=-1.0):
    return refine.Model(change=dict(change or refine.PRIOR_CHANGE),
                        yields=dict(yields or {k: 1.0 for k in refine.KINDS}), z_none=z_none)


def test_a_page_after_a_short_or_unmeasured_page_is_not_expected_to_pay():
    m = model()
    full = Observed(z={"": 2.0, "page:2": 1.0}, results={"": 35, "page:2": 35})
    assert refine.expected(Query("a", "a", "page:3", page=3), full, m) == pytest.approx(0.5)
    short = Observed(z={"": 2.0, "page:2": 1.0}, results={"": 35, "page:2": 10})
    assert refine.expected(Query("a", "a", "page:3", page=3), short, m) is None
    unmeasured = Observed(z={"": 2.0}, results={"": 35})
    assert refine.expected(Query("a", "a", "page:3", page=3), unmeasured, m) is None
    assert refine.expected(Query("a", "a", "backend:bing", backend="bing"), full, m) == pytest.approx(1.5)


def test_a_refinement_that_keeps_fewer_images_is_worth_less_at_the_same_reward():
    seen = Observed(z={"": 2.0, "page:2": 2.0}, results={"": 35, "page:2": 35},
                    kept={"": 30, "page:2": 15})
    m = model(change={k: 0.0 for k in refine.KINDS}, yields={"page": 1.0, "backend": 1.0, "desc": 0.25},
              z_none=-1.0)
    # a descriptor scoring the same z but keeping a quarter as many images: a quarter of the way
    # from a query that brings nothing (z -1) to the first ask (z 2)
    assert refine.expected(Query("a", "x", "desc:x"), seen, m) == pytest.approx(-1.0 + 3.0 * 0.25)
    assert refine.expected(Query("a", "a", "backend:b", backend="b"), seen, m) == pytest.approx(2.0)
    # page 3 follows page 2, which kept half of what page 1 did: page 3 is expected to, too
    assert refine.expected(Query("a", "a", "page:3", page=3), seen, m) == pytest.approx(-1.0 + 3.0 * 0.5)


def test_descriptors_that_repeat_the_first_ask_stop_being_asked():
    """A kind measured to keep few new images loses to a page, though it scores more per image."""
    by_concept = {i: Observed(z={"": 1.0, "desc:x": 1.0, "page:2": 0.5},
                              results={"": 35, "desc:x": 35, "page:2": 35},
                              kept={"": 30, "desc:x": 6, "page:2": 27}) for i in range(20)}
    for i in range(90, 100):    # unrelated concepts
        by_concept[i] = Observed(z={"": -2.0}, results={"": 35}, kept={"": 30})
    by_concept[7] = Observed(z={"": 1.5}, results={"": 35}, kept={"": 30})
    offer = Refinements(pages=True, descriptors={"c7": ["y"]})
    concepts = [f"c{i}" for i in range(100)]
    out = {q.concept: q for _, q in refine.candidates(concepts, by_concept, {}, offer, floor=0.0)}
    assert out["c7"].refinement == "page:2"
    assert refine.expected(Query("c7", "y", "desc:y"), by_concept[7], refine.learn(by_concept)) < 0


# -- what re-asks are judged on: the images that look like the target ---------------------------

@pytest.mark.parametrize("seed", range(6))
def test_the_share_above_a_threshold_is_read_from_a_querys_quantiles(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(1, 60))
        rewards = np.concatenate([rng.normal(rng.normal(), rng.uniform(0.01, 1), size=n),
                                  rng.normal(rng.normal(), 0.1, size=int(rng.integers(0, 30)))])
        q = refine.summary(rewards.tolist())
        assert len(q) == len(refine.QUANTILES) and q == sorted(q)
        for threshold in np.quantile(rewards, [0.05, 0.3, 0.5, 0.8, 0.95]):
            true = float((rewards > threshold).mean())
            assert abs(refine.share_above(q, threshold) - true) <= 0.1 + 1.0 / len(rewards)
    assert refine.summary([]) == [] and refine.summary([float("nan")]) == []


def test_the_top_threshold_weighs_each_query_by_the_images_it_kept():
    many = [[0.0] * 9] * 1                     # one query of 90 images at 0.0
    few = [[1.0] * 9] * 1                      # one of 10 images at 1.0
    assert refine.top_threshold(many + few, [90, 10]) == 0.0     # 70% of the images are at 0.0
    assert refine.top_threshold(many + few, [10, 90]) == 1.0
    assert refine.top_threshold([None, []], [5, 0]) is None


def test_observations_without_image_rewards_are_judged_by_their_mean():
    values, usable, shares = refine.top_shares([None, None], [0.5, -1.0], ["", ""], [5, 5])
    assert list(values) == [0.5, -1.0] and usable.all() and not shares
    values, usable, shares = refine.top_shares([None, [0.0] * 9, []], [0.5, 0.1, -1.0], ["", "", "page:2"], [5, 9, 0])
    assert list(usable) == [False, True, True] and values[2] == 0.0 and shares   # kept none: brought none


def images(kind: str, n: int = 30) -> list[float]:
    """Image rewards of a query: `target` (its concept's pictures, ~0.05), `lookalike` (pictures a
    little like the target, ~0.0), `unrelated` (~-0.15), or `page` (half its concept's pictures,
    half off-topic: the mean of a look-alike)."""
    rng = np.random.default_rng(abs(hash((kind, n))) % 2**32)
    if kind == "page":
        return images("target", n // 2) + list(rng.normal(-0.05, 0.02, n - n // 2))
    centre = {"target": 0.05, "lookalike": 0.0, "unrelated": -0.15}[kind]
    return list(rng.normal(centre, 0.01, n))


def looked(concept, kind, rnd=0, refinement="", n=30):
    r = images(kind, n)
    return QueryOutcome(concept=concept, text=concept, round=rnd, n_results=35, n_kept=len(r),
                        reward=float(np.mean(r)) if r else -0.2, image_rewards=r, refinement=refinement)


def run_dry(with_images: bool):
    """Rounds 0-1: good concepts found, and their pages measured to bring half of their pictures;
    round 2: the vocabulary's good concepts are asked, and the new ones are look-alikes, whose
    mean reward equals a page's. Returns the next round's re-asks."""
    policy = policy_with(reask_share=0.5)
    policy.predicted_reward = lambda: None
    outcomes = [looked(c, "target" if i < 12 else "unrelated") for i, c in enumerate(CONCEPTS[:24])]
    outcomes += [looked(c, "target", 1) for c in CONCEPTS[24:32]]
    outcomes += [looked(c, "page", 1, "page:2") for c in CONCEPTS[:4]]
    outcomes += [looked(c, "lookalike", 2) for c in CONCEPTS[32:48]]
    if not with_images:
        outcomes = [QueryOutcome(**{**o.__dict__, "image_rewards": []}) for o in outcomes]
    for o in outcomes:
        policy.asked[policy.index[o.concept]] = True
    policy.update(outcomes)
    return [q for q in policy.sample_queries(16) if q.refinement]


def test_late_in_a_run_pages_of_good_concepts_beat_lookalikes_that_score_as_well_on_average():
    """A look-alike concept's images score, on average, as a good concept's later page does;
    only the page brings pictures of the target. Judged by the mean, a new look-alike is worth
    as much as the page; judged by the images that look like the target, the pages win."""
    again = run_dry(with_images=True)
    assert len(again) == 8
    assert {q.concept for q in again} <= set(CONCEPTS[:12] + CONCEPTS[24:32])    # good concepts only
    assert not run_dry(with_images=False)       # the mean alone: no re-ask wins


def test_a_predicted_reward_is_read_on_the_share_scale():
    """The GP predicts a mean reward; re-asks are judged on shares. A prediction is read as the
    share the first asks whose reward ranks as high brought, not compared in z of the reward
    (early in a run the shares are skewed: a few good concepts far above the rest)."""
    policy = policy_with()
    outcomes = [looked(c, "target" if i < 3 else "unrelated") for i, c in enumerate(CONCEPTS[:20])]
    policy.update(outcomes)
    values, _, shares = policy.reask_values()
    assert shares
    rewards = np.array([o.reward for o in outcomes])
    for predicted, expected_share in ((rewards.max(), values.max()), (rewards.min(), values.min())):
        policy.predicted_reward = lambda p=predicted: np.full(len(CONCEPTS), p)
        assert policy.new_query_value(4) == pytest.approx((expected_share - values.mean()) / values.std())


def test_fresh_image_rewards_replace_an_observations_quantiles_and_survive_a_resume():
    policy = policy_with()
    policy.update([looked(c, "target") for c in CONCEPTS[:3]] + [looked(CONCEPTS[3], "unrelated", n=0)])
    assert policy.obs_summary[3] == [] and all(len(q) == 9 for q in policy.obs_summary[:3])
    changed = policy.refresh_rewards({(CONCEPTS[0], 0, ""): -0.15},
                                     {(CONCEPTS[0], 0, ""): images("unrelated")})
    assert changed == 1 and policy.obs_summary[0] == refine.summary(images("unrelated"))
    assert policy.obs_summary[1] == refine.summary(images("target"))           # not named: kept
    resumed = policy_with()
    resumed.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert resumed.obs_summary == policy.obs_summary


# -- the policy ---------------------------------------------------------------------------------

def observed_round(policy, rewards: dict[str, float]):
    for c in rewards:
        policy.asked[policy.index[c]] = True
    policy.update([outcome(c, r) for c, r in rewards.items()])


def test_concepts_that_paid_off_are_reasked_with_their_best_refinement_within_the_share():
    policy = policy_with(reask_share=0.25)
    policy.new_query_value = lambda n: -np.inf       # whatever new concepts would pay
    observed_round(policy, {c: (3.0 if i < 6 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
    queries = policy.sample_queries(16)
    again = [q for q in queries if q.refinement]
    assert len(again) == 4 and len({q.concept for q in again}) == 4
    assert {q.concept for q in again} <= set(CONCEPTS[:6])       # only those that paid off
    assert all(q.refinement == "page:2" and q.page == 2 for q in again)   # a page beats a side query
    fresh = [q for q in queries if not q.refinement]
    assert len(fresh) == 12 and not {q.concept for q in fresh} & set(CONCEPTS[:40])


def test_measured_decay_moves_reasks_from_pages_to_descriptors():
    """Pages that paid far less than their first page: the next re-ask of a good concept is
    its descriptor, not its page 2."""
    policy = policy_with(reask_share=0.5)
    policy.new_query_value = lambda n: -np.inf
    observed_round(policy, {c: (3.0 if i < 20 else 0.0) for i, c in enumerate(CONCEPTS[:60])})
    policy.update([outcome(c, -3.0, 1, "page:2") for c in CONCEPTS[:10]])   # page 2 paid nothing
    again = [q for q in policy.sample_queries(8) if q.refinement]
    assert again and all(q.refinement.startswith(("desc:", "backend:")) for q in again)


def test_no_reask_where_new_concepts_are_expected_to_pay_more():
    policy = policy_with(reask_share=0.5)
    observed_round(policy, {c: (1.0 if i < 6 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
    policy.new_query_value = lambda n: 10.0
    assert not any(q.refinement for q in policy.sample_queries(16))


def test_a_new_concept_is_valued_at_what_new_concepts_paid_lately_once_that_is_measured():
    """Before a round is measured, the prediction for the best unasked concepts; then the last
    round's first asks say what new ones pay, below the prediction (the good concepts asked) or
    above it (a posterior mean is shrunk towards the average)."""
    policy = policy_with()
    policy.predicted_reward = lambda: np.full(len(CONCEPTS), 2.0)     # as the GP might hope
    observed_round(policy, {c: float(i % 2) for i, c in enumerate(CONCEPTS[:20])})   # round 0
    assert policy.new_query_value(8) == pytest.approx((2.0 - 0.5) / 0.5)   # round 0 was blind: the prediction
    policy.update([outcome(c, 0.0, 1) for c in CONCEPTS[20:30]])      # round 1 paid the least
    _, rewards, _ = policy.first_asks()
    assert policy.new_query_value(8) == pytest.approx((0.0 - rewards.mean()) / rewards.std())
    policy.update([outcome(c, 2.0, 2) for c in CONCEPTS[30:40]])      # round 2 paid as predicted
    _, rewards, _ = policy.first_asks()
    assert policy.new_query_value(8) == pytest.approx((2.0 - rewards.mean()) / rewards.std())
    policy.update([outcome(c, 3.0, 3) for c in CONCEPTS[40:50]])      # round 3 paid over the prediction
    _, rewards, _ = policy.first_asks()
    assert policy.new_query_value(8) == pytest.approx((3.0 - rewards.mean()) / rewards.std())
    ucb_like = policy_with()
    ucb_like.predicted_reward = lambda: None                           # no prediction at all
    observed_round(ucb_like, {c: float(i % 2) for i, c in enumerate(CONCEPTS[:20])})
    assert ucb_like.new_query_value(8) == -np.inf


def test_late_in_a_run_the_best_pages_displace_new_concepts_that_pay_little():
    policy = policy_with(reask_share=0.5)
    policy.predicted_reward = lambda: np.full(len(CONCEPTS), 3.0)
    observed_round(policy, {c: (3.0 if i < 10 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
    assert not any(q.refinement for q in policy.sample_queries(16))   # new ones predicted to pay as much
    policy.update([outcome(c, -1.0, 1) for c in CONCEPTS[40:56]])     # ... but they paid the least
    again = [q for q in policy.sample_queries(16) if q.refinement]
    assert len(again) == 8 and {q.concept for q in again} <= set(CONCEPTS[:10])


def test_below_the_average_first_ask_when_new_concepts_pay_less_still():
    """The average first ask is no bound of its own: late in a run new concepts pay less than
    it, and a page expected to pay less than it but more than them is worth asking."""
    def reasked(value_of_new):
        policy = policy_with(reask_share=0.5)
        observed_round(policy, {c: float(i % 4) for i, c in enumerate(CONCEPTS[:40])})
        by_concept = refine.observed(policy.obs_concept, policy.obs_reward, policy.obs_refinement,
                                     policy.obs_results, policy.obs_kept)
        values = {q.concept: v for v, q in refine.candidates(policy.concepts, by_concept, {},
                                                            policy.offer, -np.inf)}
        policy.new_query_value = lambda n: value_of_new
        return [values[q.concept] for q in policy.sample_reasks(20, 20)]
    assert any(v < 0 for v in reasked(-1.5)) and all(v > -1.5 for v in reasked(-1.5))
    assert reasked(-np.inf) and all(v > 0 for v in reasked(-np.inf))   # nothing says: the average


def test_the_baselines_and_a_zero_share_never_reask():
    for name, cfg in (("random", {}), ("oracle", {}), ("gp", {"reask_share": 0.0})):
        policy = policy_with(name, **cfg)
        policy.new_query_value = lambda n: -np.inf
        observed_round(policy, {c: (3.0 if i < 6 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
        assert not any(q.refinement for q in policy.sample_queries(16)), name


def test_the_gp_models_first_asks_only():
    """A later page that paid less says nothing of the concept's neighbours: the GP's training
    set is the same with or without it."""
    a, b = policy_with(), policy_with()
    for p in (a, b):
        observed_round(p, {c: float(i % 5) for i, c in enumerate(CONCEPTS[:30])})
    b.update([outcome(c, -10.0, 1, "page:2") for c in CONCEPTS[:10]])
    ia, ya = a.training_set()
    ib, yb = b.training_set()
    assert np.array_equal(ia, ib) and np.allclose(ya, yb)
    assert np.allclose(a.mean, b.mean)


def test_a_failed_refinement_is_not_asked_and_comes_back():
    policy = policy_with(reask_share=0.25)
    policy.new_query_value = lambda n: -np.inf
    observed_round(policy, {c: (3.0 if i < 1 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
    (again,) = [q for q in policy.sample_queries(4) if q.refinement]
    assert again.refinement in policy.refined[policy.index[again.concept]]
    policy.search_failed([again])
    assert again.refinement not in policy.refined.get(policy.index[again.concept], set())
    assert again in [q for q in policy.sample_queries(4) if q.refinement]   # offered again
    policy.asked_again([again])
    assert again.refinement in policy.refined[policy.index[again.concept]]


def test_refinement_state_survives_a_resume_and_old_states_load():
    policy = policy_with(reask_share=0.25)
    policy.new_query_value = lambda n: -np.inf
    observed_round(policy, {c: (3.0 if i < 6 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
    policy.update([outcome(CONCEPTS[0], 1.0, 1, "page:2", n_results=20)])
    policy.sample_queries(16)
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = policy_with(reask_share=0.25)
    resumed.new_query_value = lambda n: -np.inf
    resumed.load_state_dict(state)
    assert resumed.refined == policy.refined and resumed.obs_refinement == policy.obs_refinement
    assert resumed.obs_results == policy.obs_results and resumed.obs_kept == policy.obs_kept
    assert resumed.sample_queries(16) == policy.sample_queries(16)
    old = {k: v for k, v in state.items()
           if k not in ("obs_refinement", "obs_results", "obs_kept", "obs_summary", "refined")}
    old["obs_concept"], old["obs_reward"], old["obs_round"] = [0, 1, 2], [1.0, 0.0, 0.5], [0, 0, 0]
    legacy = policy_with()
    legacy.load_state_dict(old)
    assert legacy.obs_refinement == ["", "", ""] and legacy.refined == {}
    assert legacy.obs_kept == [-1, -1, -1]    # not recorded: refinements valued at their prior yield
    assert legacy.obs_summary == [None, None, None]   # and by their mean reward
    broken = dict(state, obs_results=[1])
    with pytest.raises(ValueError, match="different lengths"):
        policy_with().load_state_dict(broken)


# -- the loop: a re-ask is sent as what it is ---------------------------------------------------

class RecordingEngine(Engine):
    """Answers every search with the same two URLs plus one per (text, page, backend)."""

    name = "recording"
    pages = True
    backends = ("bing",)

    def __init__(self):
        self.calls = []

    async def search(self, query, max_results, page=1, backend=""):
        self.calls.append((query, page, backend))
        own = f"http://127.0.0.1:9/{abs(hash((query, page, backend)))}.jpg"
        return SearchOutcome([SearchResult(title=query, image=u)
                              for u in ("http://127.0.0.1:9/seen-a.jpg", own)])


class NoFetch:
    async def crawl(self, items):
        return []


def test_the_loop_sends_a_reask_with_its_page_and_backend_and_records_it():
    with tempfile.TemporaryDirectory() as tmp:
        cfg = apply_overrides(Config(), ["crawl.queries_per_round=4", "policy.reask_share=0.5"])
        policy = policy_with(reask_share=0.5)
        policy.new_query_value = lambda n: -np.inf
        observed_round(policy, {c: (3.0 if i < 2 else 0.0) for i, c in enumerate(CONCEPTS[:40])})
        engine = RecordingEngine()
        ex = Explorer(cfg, RunDir(Path(tmp) / "run"), MetaDB(Path(tmp) / "explore.db"), engine,
                      NoFetch(), policy, learner=None, budget=None)
        asyncio.run(ex.crawl_round(1))
        rows = ex.db.queries(round=1)
        outcomes = ex.score_round(1, {})
        ex.db.close()
    again = [r for r in rows if r.refinement]
    assert len(again) == 2 and {r.concept for r in again} == set(CONCEPTS[:2])
    for r in again:
        assert (r.text, r.page, r.backend) in engine.calls
        assert r.refinement == ("page:2" if r.page == 2 else f"backend:{r.backend}")
    assert sorted(o.refinement for o in outcomes if o.refinement) == sorted(r.refinement for r in again)


# -- what the user reads -------------------------------------------------------------------------

def test_rewards_report_a_concept_by_its_first_asks_and_its_reasks_apart(tmp_path):
    """`explore rewards`: a concept's reward is what its first ask paid (a later page pays less
    by design), beside how often it was re-asked and what that paid; the export names each
    query's refinement."""
    from explorer.run import report
    run = RunDir(tmp_path / "run")
    run.root.mkdir(parents=True)
    with MetaDB(run.db_path) as db:
        for concept, reward, refinement, page in (("rose", 0.9, "", 1), ("rose", 0.3, "page:2", 2),
                                                  ("rose", 0.1, "desc:wild rose", 1),
                                                  ("tulip", 0.5, "", 1), ("oak", 0.2, "", 1)):
            qid = db.add_query(0, concept, concept, "sandbox", refinement=refinement, page=page)
            db.set_query_status(qid, "done", reward=reward, n_kept=3)
        db.conn.commit()
    rows = report.concept_rewards(run)
    assert [r["concept"] for r in rows] == ["rose", "tulip", "oak"]
    rose = rows[0]
    assert rose["reward"] == pytest.approx(0.9) and rose["reasks"] == 2
    assert rose["reask_reward"] == pytest.approx(0.2) and rose["n"] == 3 and rose["kept"] == 9
    assert rows[1]["reasks"] == 0 and rows[1]["reask_reward"] is None
    exported = report.query_rows(run)
    assert [(q["refinement"], q["page"]) for q in exported if q["concept"] == "rose"] == \
        [("", 1), ("page:2", 2), ("desc:wild rose", 1)]


def test_a_vocabulary_all_asked_gets_refinements_instead_of_repeats():
    """Twenty concepts, all asked: the round's queries are refinements (even of concepts that
    did not pay off), not first asks repeated into the search cache."""
    concepts = CONCEPTS[:20]
    policy = make_policy("gp", concepts, EMB[:20], PolicyConfig(reask_share=0.25), seed=0)
    policy.offer = Refinements(pages=True, max_page=5)
    observed_round(policy, {c: float(i % 4) for i, c in enumerate(concepts)})
    queries = policy.sample_queries(12)
    assert len(queries) == 12 and all(q.refinement.startswith("page:") for q in queries)
    assert len({q.concept for q in queries}) == 12
    no_pages = make_policy("gp", concepts, EMB[:20], PolicyConfig(reask_share=0.25), seed=0)
    observed_round(no_pages, {c: float(i % 4) for i, c in enumerate(concepts)})
    assert len(no_pages.sample_queries(12)) == 12      # nothing to refine: repeats, as before
