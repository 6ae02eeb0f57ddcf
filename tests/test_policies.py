import json

import numpy as np
import pytest

from explorer.config import PolicyConfig
from explorer.records import Query, QueryOutcome
from policies.base import make_queries, softmax_sample
from policies.registry import make_policy
from policies.gp import GPPolicy


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def outcome(concept, reward, rnd=0):
    return QueryOutcome(concept=concept, text=concept, round=rnd, n_results=10, n_kept=5, reward=reward)


# -- sampling ---------------------------------------------------------------------------------

def first_draw_freqs(scores, tau, draws=20000, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(scores))
    for _ in range(draws):
        counts[softmax_sample(scores, 3, tau, 0.0, rng)[0]] += 1
    return counts / draws


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_first_draw_follows_softmax_of_scores_over_tau(tau):
    scores = np.array([0.0, 0.3, 0.6, 1.0, -0.5])
    expected = np.exp(scores / tau) / np.exp(scores / tau).sum()
    freqs = first_draw_freqs(scores, tau)
    assert np.abs(freqs - expected).max() < 0.015


def test_lower_temperature_concentrates_on_the_best():
    scores = np.array([0.0, 0.3, 0.6, 1.0, -0.5])
    assert first_draw_freqs(scores, 0.1, 4000)[3] > first_draw_freqs(scores, 1.0, 4000)[3] + 0.3


def test_samples_are_distinct_and_respect_allowed():
    rng = np.random.default_rng(0)
    allowed = np.zeros(50, bool)
    allowed[10:30] = True
    for _ in range(50):
        picked = softmax_sample(rng.normal(size=50), 15, 0.3, 0.3, rng, allowed)
        assert len(set(picked.tolist())) == 15 and allowed[picked].all()
    assert len(softmax_sample(np.zeros(50), 40, 1.0, 0.0, rng, allowed)) == 20


def test_epsilon_share_is_uniform():
    # 20 concepts dominate the softmax, so the softmax part of a batch of 10 stays among them;
    # the ε = 0.3 share is drawn uniformly from the 90 left: 80 of them are outsiders.
    scores = np.full(100, -50.0)
    scores[:20] = 50.0
    rng = np.random.default_rng(1)
    counts = np.zeros(100)
    n, rounds = 10, 3000
    for _ in range(rounds):
        counts[softmax_sample(scores, n, 0.1, 0.3, rng)] += 1
    outside = counts[20:]
    assert abs(outside.sum() / (n * rounds) - 0.3 * 80 / 90) < 0.02
    expected = outside.sum() / 80
    assert np.abs(outside - expected).max() < 0.3 * expected
    assert softmax_sample(scores, 20, 0.1, 0.0, rng).max() < 20   # ε = 0: none outside


# -- the GP -----------------------------------------------------------------------------------

def test_gp_recovers_a_smooth_function_of_embeddings():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(2000, 32)))
    hidden = unit(rng.normal(size=(1, 32)))[0]
    truth = emb @ hidden + 0.5 * (emb @ unit(rng.normal(size=(1, 32)))[0]) ** 2
    concepts = [f"c{i}" for i in range(2000)]
    policy = GPPolicy(concepts, emb, PolicyConfig(), seed=0)
    seen = rng.choice(2000, 200, replace=False)
    policy.update([outcome(concepts[i], truth[i] + 0.01 * rng.normal()) for i in seen])
    unseen = np.setdiff1d(np.arange(2000), seen)
    corr = np.corrcoef(policy.mean[unseen], truth[unseen])[0, 1]
    assert corr > 0.8


def test_gp_averages_repeats_and_caps_its_training_set():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(300, 8)))
    concepts = [f"c{i}" for i in range(300)]
    policy = GPPolicy(concepts, emb, PolicyConfig(max_observations=40), seed=0)
    policy.obs_concept = [0, 0, 1] + list(range(2, 100))
    policy.obs_reward = [1.0, 3.0, 5.0] + [0.0] * 98
    policy.obs_round = [0, 1, 0] + list(range(2, 100))
    policy.obs_refinement = [""] * 101
    idx, y = policy.training_set()
    assert len(idx) == 40
    assert 1 in idx and 0 in idx                # the best kept although old
    assert y[list(idx).index(0)] == 2.0          # repeats averaged
    assert set(range(80, 100)) <= set(idx.tolist())  # the newest half kept


def test_unobserved_policy_samples_uniformly_and_never_repeats_until_exhausted():
    emb = unit(np.random.default_rng(0).normal(size=(30, 4)))
    concepts = [f"c{i}" for i in range(30)]
    policy = make_policy("gp", concepts, emb, PolicyConfig(), seed=3)
    first = policy.sample(12) + policy.sample(12)
    assert len(set(first)) == 24
    last = policy.sample(12)
    assert len(set(last)) == 12 and set(concepts) - set(first) <= set(last)


# -- state ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gp", "ucb", "random", "oracle"])
def test_state_round_trips_through_json(name):
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(400, 16)))
    concepts = [f"c{i}" for i in range(400)]
    relevance = {c: float(i % 3 == 0) for i, c in enumerate(concepts)}
    cfg = PolicyConfig()
    a = make_policy(name, concepts, emb, cfg, seed=7, relevance=relevance)
    for rnd in range(2):
        picked = a.sample(20)
        a.update([outcome(c, float(emb[a.index[c]] @ emb[0]), rnd) for c in picked])
    state = json.loads(json.dumps(a.state_dict()))
    b = make_policy(name, concepts, emb, cfg, seed=99, relevance=relevance)
    b.load_state_dict(state)
    assert b.sample(25) == a.sample(25)
    assert b.sample(25) == a.sample(25)


def test_state_from_another_vocabulary_or_policy_is_refused():
    emb = unit(np.random.default_rng(0).normal(size=(20, 4)))
    concepts = [f"c{i}" for i in range(20)]
    state = make_policy("random", concepts, emb, PolicyConfig(), 0).state_dict()
    with pytest.raises(ValueError, match="policy"):
        make_policy("gp", concepts, emb, PolicyConfig(), 0).load_state_dict(state)
    with pytest.raises(ValueError, match="vocabulary"):
        make_policy("random", concepts[::-1], emb, PolicyConfig(), 0).load_state_dict(state)


def test_oracle_needs_relevance_and_draws_only_relevant():
    emb = unit(np.random.default_rng(0).normal(size=(50, 4)))
    concepts = [f"c{i}" for i in range(50)]
    with pytest.raises(ValueError, match="relevance"):
        make_policy("oracle", concepts, emb, PolicyConfig(), 0)
    relevance = {"c1": 1.0, "c2": 0.5, "c3": 0.1, "zzz": 1.0}
    oracle = make_policy("oracle", concepts, emb, PolicyConfig(), 0, relevance=relevance)
    assert set(oracle.sample(10)) == {"c1", "c2", "c3"}
    assert set(oracle.sample(2)) <= {"c1", "c2", "c3"}


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("greedy", ["a"], np.ones((1, 2)), PolicyConfig(), 0)


def test_make_queries_adds_descriptors_to_the_configured_share():
    rng = np.random.default_rng(0)
    concepts = [f"c{i}" for i in range(2000)]
    queries = make_queries(concepts, ["red", "old"], 0.25, rng)
    with_desc = [q.text for q in queries if q.text != q.concept]
    assert 0.22 < len(with_desc) / 2000 < 0.28
    assert all(t.split(" ", 1)[0] in {"red", "old"} for t in with_desc)
    assert [q.concept for q in queries] == concepts and not any(q.refinement for q in queries)
    assert make_queries(concepts[:5], [], 1.0, rng) == [Query(c, c) for c in concepts[:5]]


# -- simulated policy quality (a cheap proxy for bench/policy.py on the sandbox) --------------

def simulated_world(seed=0, families=14, per_family=300, dim=32):
    """Concepts in families (embeddings = family centre + noise); one family is relevant
    (reward ~0.6), one half-relevant (~0.45), the rest ~0.2, plus reward noise."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(families, dim)))
    family = np.repeat(np.arange(families), per_family)
    emb = unit(centres[family] + 0.08 * rng.normal(size=(len(family), dim)))
    base = np.full(families, 0.2)
    base[0], base[1] = 0.6, 0.45
    concepts = [f"f{f}-c{i}" for i, f in enumerate(family)]
    relevance = {c: 1.0 for c, f in zip(concepts, family) if f == 0}
    return concepts, emb, family, base, relevance


def run_simulation(name, rounds=10, n=20, seed=0):
    concepts, emb, family, base, relevance = simulated_world()
    rng = np.random.default_rng(100 + seed)
    policy = make_policy(name, concepts, emb, PolicyConfig(), seed, relevance=relevance)
    relevant = 0   # distinct relevant concepts asked (a repeat brings no new images)
    pending: list = []
    for rnd in range(rounds):
        picked = policy.sample(n)
        assert len(set(picked)) == n
        relevant += sum(family[policy.index[c]] == 0 for c in picked)
        policy.update(pending)        # rewards arrive one round late, as in the loop
        pending = [outcome(c, base[family[policy.index[c]]] + 0.05 * rng.normal(), rnd)
                   for c in picked]
    return relevant


def test_simulated_gp_and_ucb_find_the_relevant_family():
    results = {name: np.mean([run_simulation(name, seed=s) for s in range(2)])
               for name in ["random", "oracle", "gp", "ucb"]}
    print(results)
    assert results["oracle"] == 200
    assert results["gp"] >= 3 * max(results["random"], 1.0)
    assert results["gp"] >= 0.6 * results["oracle"]
    assert results["ucb"] >= 3 * max(results["random"], 1.0)


@pytest.mark.parametrize("name", ["gp", "ucb"])
def test_gp_copes_with_one_observation_and_flat_rewards(name):
    emb = unit(np.random.default_rng(0).normal(size=(100, 8)))
    concepts = [f"c{i}" for i in range(100)]
    policy = make_policy(name, concepts, emb, PolicyConfig(), seed=0)
    policy.update([outcome("c1", 0.5), outcome("not in vocab", 0.9), outcome("c2", float("nan"))])
    assert policy.ignored_outcomes == 2 and len(set(policy.sample(10))) == 10
    policy.update([outcome(f"c{i}", 0.0) for i in range(2, 30)])
    policy.update([outcome("c1", 0.0)])
    assert np.isfinite(policy.scores()).all()
    assert len(set(policy.sample(10))) == 10


def test_sample_queries_uses_the_policy_generator_and_descriptors():
    emb = unit(np.random.default_rng(0).normal(size=(200, 4)))
    concepts = [f"c{i}" for i in range(200)]
    a = make_policy("random", concepts, emb, PolicyConfig(), seed=1)
    b = make_policy("random", concepts, emb, PolicyConfig(), seed=1)
    qa, qb = a.sample_queries(50, ["red", "old"], 0.5), b.sample_queries(50, ["red", "old"], 0.5)
    assert qa == qb
    assert 10 < sum(q.text != q.concept for q in qa) < 40


def test_ucb_counts_pending_concepts_as_explored():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(300, 8)))
    concepts = [f"c{i}" for i in range(300)]
    policy = make_policy("ucb", concepts, emb, PolicyConfig(), seed=0)
    policy.update([outcome(concepts[i], float(emb[i, 0]), 0) for i in range(40)])
    before = policy.std_with_pending().copy()
    picked = [policy.index[c] for c in policy.sample(20)]      # asked, rewards not back yet
    assert set(policy.pending().tolist()) == set(picked)
    after = policy.std_with_pending()
    assert (after[picked] < before[picked]).all()
    policy.update([outcome(concepts[i], float(emb[i, 0]), 1) for i in picked])
    assert policy.pending().size == 0


# -- the target's class names guide the first round -------------------------------------------

def named_world(dim=16, per_family=40, seed=0):
    """Two families of concepts around two directions; a class name near the first."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(2, dim)))
    family = np.repeat([0, 1, 1, 1, 1], per_family)   # the named family is a fifth of the vocabulary
    emb = unit(centres[family] + 0.1 * rng.normal(size=(len(family), dim)))
    name = unit(centres[:1] + 0.05 * rng.normal(size=(1, dim)))
    return [f"f{f}-c{i}" for i, f in enumerate(family)], emb, family, name


@pytest.mark.parametrize("name", ["gp", "ucb"])
def test_the_first_round_is_drawn_near_the_class_names_then_the_policy_decides(name):
    concepts, emb, family, class_name = named_world()
    cfg = PolicyConfig(epsilon=0.0)
    blind = make_policy(name, concepts, emb, cfg, seed=1)
    guided = make_policy(name, concepts, emb, cfg, seed=1)
    guided.use_class_names(class_name)
    near = [family[guided.index[c]] == 0 for c in guided.sample(16)]
    assert all(near)                                                     # not blind: all 16 near the name
    assert sum(family[blind.index[c]] == 0 for c in blind.sample(16)) < 12   # blind: ~a fifth
    # once rewards say the other family pays, the policy's own scores decide, not the names
    guided.update([outcome(c, 0.1) for c in concepts if c.startswith("f0-")][:16]
                  + [outcome(c, 0.9) for c in concepts if c.startswith("f1-")][:16])
    later = [family[guided.index[c]] for c in guided.sample(16)]
    assert sum(f == 1 for f in later) >= 14


@pytest.mark.parametrize("share, named", [(0.5, 8), (0.25, 4)])
def test_a_share_of_the_first_round_is_drawn_near_the_names_and_the_rest_blind(share, named):
    concepts, emb, family, class_name = named_world(per_family=200)
    rest_near = []
    for seed in range(20):
        policy = make_policy("gp", concepts, emb, PolicyConfig(epsilon=0.0, class_names_share=share), seed)
        policy.use_class_names(class_name)
        picked = policy.sample(16)
        assert len(set(picked)) == 16
        near = [family[policy.index[c]] == 0 for c in picked]
        assert all(near[:named])                    # the named share, all near the name
        rest_near.append(sum(near[named:]) / (16 - named))
    assert 0.05 < np.mean(rest_near) < 0.4          # the rest blind: about the family's fifth


def test_no_share_near_the_names_is_the_blind_draw():
    concepts, emb, family, class_name = named_world()
    none = make_policy("gp", concepts, emb, PolicyConfig(class_names_share=0.0), seed=5)
    none.use_class_names(class_name)
    blind = make_policy("gp", concepts, emb, PolicyConfig(), seed=5)
    assert none.sample(16) == blind.sample(16)


def test_a_whole_share_draws_as_the_names_alone():
    concepts, emb, family, class_name = named_world()
    whole = make_policy("gp", concepts, emb, PolicyConfig(class_names_share=1.0), seed=4)
    default = make_policy("gp", concepts, emb, PolicyConfig(), seed=4)
    for policy in (whole, default):
        policy.use_class_names(class_name)
    assert whole.sample(16) == default.sample(16)


def test_the_baselines_and_an_empty_name_list_keep_the_blind_draw():
    concepts, emb, family, class_name = named_world()
    for name in ("random", "oracle"):
        relevance = {c: 1.0 for c in concepts} if name == "oracle" else None
        policy = make_policy(name, concepts, emb, PolicyConfig(), seed=0, relevance=relevance)
        policy.use_class_names(class_name)
        assert policy.prior is None
    policy = make_policy("gp", concepts, emb, PolicyConfig(), seed=0)
    policy.use_class_names(np.zeros((0, emb.shape[1]), np.float32))
    assert policy.prior is None
    twin = make_policy("gp", concepts, emb, PolicyConfig(), seed=0)
    assert policy.sample(16) == twin.sample(16)   # the same draw as a policy never given names


def test_a_resumed_run_with_names_draws_what_it_would_have():
    concepts, emb, family, class_name = named_world()
    first = make_policy("gp", concepts, emb, PolicyConfig(), seed=2)
    first.use_class_names(class_name)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make_policy("gp", concepts, emb, PolicyConfig(), seed=2)
    resumed.load_state_dict(state)
    resumed.use_class_names(class_name)   # assemble hands the names in on every start
    assert first.sample(16) == resumed.sample(16)
