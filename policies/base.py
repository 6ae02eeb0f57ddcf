"""The policy interface: which concepts to search for next (ARCHITECTURE.md, "policies/").

A policy sees concepts, their text embeddings and the rewards of finished queries; never the
network or the model. Every policy:
- `sample(n)`: n distinct concepts, none asked before while untried ones remain (a repeated
  query brings back the engine's same results, i.e. duplicates);
- `sample_queries(n, ...)`: a round's queries: up to `reask_share` of them re-ask concepts that
  paid off with the refinement expected to pay most (policies/refine.py), the rest first asks
  of concepts from `sample`;
- `update(outcomes)`: learns from finished queries: first asks are what the scores model (the
  value of a concept not asked yet); refined ones teach what refinements pay;
- `refresh_rewards(fresh)`: earlier observations re-scored by a later encoder replace the old;
- `state_dict()` / `load_state_dict(d)`: JSON-serialisable state (observations, what was asked,
  the random generator), saved with the run so that a resumed run samples what it would have.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from explorer.config import PolicyConfig
from explorer.records import Query, QueryOutcome
from policies import refine


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardised scores; all zeros (uniform sampling) when the predictions are flat."""
    std = float(x.std())
    if std < 1e-9 * (1.0 + float(np.abs(x).mean())):
        return np.zeros_like(x)
    return (x - x.mean()) / std


def softmax_sample(scores: np.ndarray, n: int, temperature: float, epsilon: float,
                   rng: np.random.Generator, allowed: np.ndarray | None = None) -> np.ndarray:
    """n distinct indices: a Binomial(n, ε) share uniformly at random, the rest without
    replacement with p(i) ∝ exp(scores[i] / τ) (Gumbel top-k: exactly successive softmax draws).

    scores: [N]; allowed: [N] bool (None = all). Returns int64 [min(n, allowed.sum())].
    """
    scores = np.asarray(scores, dtype=np.float64)
    allowed = np.ones(len(scores), bool) if allowed is None else np.asarray(allowed, bool)
    pool = np.flatnonzero(allowed)
    n = min(int(n), len(pool))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    n_uniform = int(rng.binomial(n, min(max(epsilon, 0.0), 1.0)))
    keys = scores[pool] / max(temperature, 1e-12) + rng.gumbel(size=len(pool))
    n_soft = n - n_uniform
    top = np.argpartition(-keys, n_soft - 1)[:n_soft] if n_soft else np.zeros(0, np.int64)
    soft = pool[top[np.argsort(-keys[top], kind="stable")]]   # in draw order
    rest = np.setdiff1d(pool, soft, assume_unique=True)
    uniform = rng.choice(rest, size=n_uniform, replace=False) if n_uniform else rest[:0]
    return np.concatenate([soft, uniform]).astype(np.int64)


def make_queries(concepts: list[str], descriptors: list[str], share: float,
                 rng: np.random.Generator) -> list[Query]:
    """First asks of `concepts`: a `share` of them get a random word of the global descriptor
    list ("<descriptor> <concept>", e.g. "watercolor tulip") to diversify what the engine
    returns."""
    out = []
    for concept in concepts:
        if descriptors and share > 0 and rng.random() < share:
            out.append(Query(concept, f"{descriptors[rng.integers(len(descriptors))]} {concept}"))
        else:
            out.append(Query(concept, concept))
    return out


def load_descriptors(path: str) -> list[str]:
    """Descriptor words from a file, one a line ("" = none); normalised and deduplicated."""
    if not path:
        return []
    from explorer.inputs.vocab import file_concepts

    return file_concepts(path)


class Policy(ABC):
    """Chooses concepts; learns from query rewards. Subclasses implement `scores`."""

    name: ClassVar[str] = ""
    reasks: ClassVar[bool] = True   # the baselines (random, oracle) only ever ask new concepts
    takes_prior: ClassVar[bool] = True   # the baselines draw as they always do, names or not

    def __init__(self, concepts: list[str], embeddings: np.ndarray, cfg: PolicyConfig, seed: int):
        if len(concepts) != len(embeddings):
            raise ValueError(f"{len(concepts)} concepts but {len(embeddings)} embeddings")
        if not concepts:
            raise ValueError("the vocabulary is empty")
        self.concepts = list(concepts)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)   # [N, D]
        self.cfg = cfg
        self.seed = seed
        self.index = {c: i for i, c in enumerate(self.concepts)}
        self.rng = np.random.default_rng(seed)
        self.asked = np.zeros(len(concepts), dtype=bool)   # sampled at least once
        self.obs_concept: list[int] = []                   # one entry per finished query
        self.obs_reward: list[float] = []
        self.obs_round: list[int] = []
        self.obs_refinement: list[str] = []                # "" = a first ask
        self.obs_results: list[int] = []                   # results the engine answered
        self.obs_kept: list[int] = []                      # images kept (-1: not recorded)
        self.obs_summary: list[list[float] | None] = []    # quantiles of its image rewards (refine.summary;
                                                           # None: not recorded)
        self.refined: dict[int, set[str]] = {}             # refinements asked, by concept
        self.offer = refine.Refinements()                  # what the engine and vocab offer
        self.ignored_outcomes = 0     # concept not in the vocabulary, or reward not finite
        self.prior: np.ndarray | None = None   # [N] z-scored similarity to the target's class names

    # -- what subclasses decide -------------------------------------------------------------
    @abstractmethod
    def scores(self) -> np.ndarray | None:
        """Sampling scores [N] (softmax with the config's τ and ε), or None for uniform."""

    def fit(self) -> None:
        """Re-learn from the observations (called after `update` and `load_state_dict`)."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, d: dict) -> None:
        pass

    # -- the interface ----------------------------------------------------------------------
    def candidates(self) -> np.ndarray:
        """Concepts this policy may ever pick: [N] bool (all of them, except for the oracle)."""
        return np.ones(len(self.concepts), dtype=bool)

    def sampling_params(self) -> tuple[float, float]:
        """(τ, ε) for `softmax_sample`."""
        return self.cfg.temperature, self.cfg.epsilon

    def use_class_names(self, name_embeddings: np.ndarray) -> None:
        """Guides the draws that no observation informs yet (the first round, asked blind
        otherwise) by each concept's text similarity to the nearest of the target's class names
        (unit embeddings [K, D], the vocabulary's text model), z-scored over the vocabulary and
        drawn with the policy's own τ and ε; `cfg.class_names_share` of the round is drawn so,
        the rest uniformly. Once the policy has scores of its own, they decide.
        Where the vocabulary holds nothing of the target's kind, the first round is narrower than
        a blind one (near one name); not measured: policy.class_names=false draws it blind."""
        name_embeddings = np.asarray(name_embeddings, dtype=np.float32)
        if not self.takes_prior or name_embeddings.ndim != 2 or len(name_embeddings) == 0:
            return
        self.prior = zscore((self.embeddings @ name_embeddings.T).max(axis=1).astype(np.float64))

    def sample(self, n: int) -> list[str]:
        """min(n, candidates) distinct concepts; untried ones first, repeats only once every
        candidate was asked."""
        mask = self.candidates()
        n = min(int(n), int(mask.sum()))
        scores = self.scores()
        tau, eps = self.sampling_params()
        allowed = mask & ~self.asked
        if scores is None and self.prior is not None:   # nothing observed yet: guided by the
            scores = self.prior                          # class names, a share of it blind
            named = softmax_sample(scores, round(self.cfg.class_names_share * n), tau, eps, self.rng,
                                   allowed=allowed)
            rest = allowed.copy()
            rest[named] = False
            blind = softmax_sample(np.zeros(len(self.concepts)), n - len(named), tau, eps, self.rng,
                                   allowed=rest)
            picked = np.concatenate([named, blind])
        else:
            scores = np.zeros(len(self.concepts)) if scores is None else scores
            picked = softmax_sample(scores, n, tau, eps, self.rng, allowed=allowed)
        if len(picked) < n:  # every candidate asked already: the rest may repeat
            again = mask.copy()
            again[picked] = False
            more = softmax_sample(scores, n - len(picked), tau, eps, self.rng, allowed=again)
            picked = np.concatenate([picked, more])
        self.asked[picked] = True
        return [self.concepts[i] for i in picked]

    def sample_queries(self, n: int, descriptors: list[str] = (), share: float = 0.0) -> list[Query]:
        """A round's n queries: re-asks of concepts that paid off (at most `cfg.reask_share`
        of n), then first asks of `sample`'s concepts, a `share` of those with a word of the
        global descriptor list. Uses the policy's own generator so that a resumed run asks
        the same queries."""
        again = self.sample_reasks(int(round(self.cfg.reask_share * n)), n)
        # a vocabulary nearly all asked: the best refinements rather than repeated first asks
        # (a repeat is answered from the search cache with images already fetched)
        unasked = int((self.candidates() & ~self.asked).sum())
        if unasked < n - len(again):
            again += self.sample_reasks(n - len(again) - unasked, n, floor=-np.inf,
                                        skip={q.concept for q in again})
        return again + make_queries(self.sample(n - len(again)), list(descriptors), share, self.rng)

    def sample_reasks(self, k: int, n: int | None = None, floor: float | None = None,
                      skip: set[str] = frozenset()) -> list[Query]:
        """Up to k refinements of distinct concepts (none in `skip`) that paid off, drawn with
        p ∝ exp(z/τ) of what each is expected to pay; only those expected to pay more than
        `floor`, by default what a new concept is expected to pay now (`new_query_value`; the
        average first ask where nothing says); marked asked."""
        if k <= 0 or not self.reasks:
            return []
        values, usable, _ = self.reask_values()
        keep = np.flatnonzero(usable)
        by_concept = refine.observed([self.obs_concept[j] for j in keep], values[keep].tolist(),
                                     [self.obs_refinement[j] for j in keep],
                                     [self.obs_results[j] for j in keep], [self.obs_kept[j] for j in keep])
        if floor is None:
            floor = self.new_query_value(n or k)
            floor = 0.0 if floor == -np.inf else floor
        options = [(v, q) for v, q in refine.candidates(self.concepts, by_concept, self.refined,
                                                        self.offer, floor) if q.concept not in skip]
        if not options:
            return []
        values = np.array([v for v, _ in options])
        picked = softmax_sample(values, k, self.cfg.temperature, 0.0, self.rng)
        queries = [options[i][1] for i in picked]
        self._mark_asked(queries, True)
        return queries

    def new_query_value(self, k: int) -> float:
        """What a new concept is expected to pay now, in z over first asks: what the last round's
        first asks brought (measured as re-asks are judged, `reask_values`; the policy picks
        the next ones as it picked those, and once the vocabulary's good concepts are asked, new
        ones bring less). Before a round has been measured (the first round is asked blind:
        it says nothing), what the policy predicts for its k best unasked concepts, read as what
        the first asks whose reward ranks as high brought. A prediction is not used beside a
        measure: a posterior mean is shrunk towards the average, so at the top it says less than
        the best concepts pay and would let re-asks crowd out new concepts that pay more.
        -inf where neither says (no prediction and one round seen): only the average first ask
        bounds re-asks then."""
        _, rewards, _ = self.first_asks()
        if len(rewards) < 2:
            return -np.inf
        values, usable, by_share = self.reask_values()
        first = usable & np.array([not r for r in self.obs_refinement], dtype=bool)
        values, rounds = values[first], np.asarray(self.obs_round, dtype=np.int64)[first]
        sd = float(values.std()) or 1.0
        if len(set(rounds.tolist())) > 1:
            return float((values[rounds == rounds.max()].mean() - values.mean()) / sd)
        predicted = self.predicted_reward()
        pool = predicted[self.candidates() & ~self.asked] if predicted is not None else []
        if not len(pool) or not len(values):
            return -np.inf
        best = np.partition(pool, len(pool) - min(k, len(pool)))[-min(k, len(pool)):]
        if by_share:   # a predicted reward -> the share a first ask that ranks as high brought
            ranked = np.sort(np.asarray(self.obs_reward, dtype=np.float64)[first])
            ranks = (np.searchsorted(ranked, best, side="left")       # (mid-rank among ties)
                     + np.searchsorted(ranked, best, side="right")) / (2 * len(ranked))
            best = np.quantile(values, np.clip(ranks, 0.0, 1.0))
        return float((best.mean() - values.mean()) / sd)

    def reask_values(self) -> refine.Judged:
        """What each observation brought, as re-asks are judged (refine.top_shares): values,
        usable, and whether the values are shares."""
        return refine.top_shares(self.obs_summary, self.obs_reward, self.obs_refinement, self.obs_kept)

    def predicted_reward(self) -> np.ndarray | None:
        """The reward this policy predicts for each concept's first ask [N], if it predicts."""
        return None

    def search_failed(self, queries: list[Query]) -> None:
        """Searches that got no answer (the engine was unavailable): not asked, since nothing
        was learnt about them, and no observation."""
        self._mark_asked(queries, False)

    def asked_again(self, queries: list[Query]) -> None:
        """Failed searches the loop asks again: asked, so `sample` does not pick them twice."""
        self._mark_asked(queries, True)

    def _mark_asked(self, queries: list[Query], asked: bool) -> None:
        for q in queries:
            i = self.index.get(q.concept)
            if i is None:
                continue
            if not q.refinement:
                self.asked[i] = asked
            elif asked:
                self.refined.setdefault(i, set()).add(q.refinement)
            else:
                self.refined.get(i, set()).discard(q.refinement)

    def update(self, outcomes: list[QueryOutcome]) -> None:
        for o in outcomes:
            i = self.index.get(o.concept)
            if i is None or not np.isfinite(o.reward):
                self.ignored_outcomes += 1
                continue
            self.obs_concept.append(i)
            self.obs_reward.append(float(o.reward))
            self.obs_round.append(int(o.round))
            self.obs_refinement.append(o.refinement)
            self.obs_results.append(int(o.n_results))
            self.obs_kept.append(int(o.n_kept))
            # (an outcome that names no image rewards though it kept images: not recorded)
            self.obs_summary.append(refine.summary(o.image_rewards)
                                    if o.image_rewards or o.n_kept == 0 else None)
            if o.refinement:
                self.refined.setdefault(i, set()).add(o.refinement)
            else:
                self.asked[i] = True
        self.fit()

    def first_asks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The observations the scores model: (concept [m], reward [m], round [m]) of first asks
        (a concept's later page pays less, which says nothing of its neighbours)."""
        keep = np.array([not r for r in self.obs_refinement], dtype=bool)
        return (np.asarray(self.obs_concept, dtype=np.int64)[keep],
                np.asarray(self.obs_reward, dtype=np.float64)[keep],
                np.asarray(self.obs_round, dtype=np.int64)[keep])

    def refresh_rewards(self, fresh: dict[tuple[str, int, str], float],
                        fresh_images: dict[tuple[str, int, str], list[float]] | None = None) -> int:
        """Replace the rewards of observed queries by values the current encoder gave them:
        `fresh` maps (concept, round, refinement) to a reward, `fresh_images` to the fresh
        rewards of (a sample of) its images, whose quantiles replace the observation's.
        Observations they do not name keep theirs. Does not refit: the next `update`
        conditions on the refreshed values. Returns how many observations changed."""
        changed = 0
        for j, (i, round_, ref) in enumerate(zip(self.obs_concept, self.obs_round, self.obs_refinement)):
            key = (self.concepts[i], round_, ref)
            r = fresh.get(key)
            if r is not None and np.isfinite(r):
                self.obs_reward[j] = float(r)
                changed += 1
            images = (fresh_images or {}).get(key)
            if images:
                self.obs_summary[j] = refine.summary(images)
        return changed

    def state_dict(self) -> dict:
        return {
            "policy": self.name,
            "vocab_sha": vocab_digest(self.concepts),
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "asked": np.flatnonzero(self.asked).tolist(),
            "obs_concept": list(self.obs_concept),
            "obs_reward": list(self.obs_reward),
            "obs_round": list(self.obs_round),
            "obs_refinement": list(self.obs_refinement),
            "obs_results": list(self.obs_results),
            "obs_kept": list(self.obs_kept),
            "obs_summary": list(self.obs_summary),
            "refined": {str(i): sorted(r) for i, r in self.refined.items() if r},
            "ignored_outcomes": self.ignored_outcomes,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, d: dict) -> None:
        if d.get("policy") != self.name:
            raise ValueError(f"state is for policy {d.get('policy')!r}, not {self.name!r}")
        if d.get("vocab_sha") != vocab_digest(self.concepts):
            raise ValueError("state was saved with a different vocabulary")
        self.rng.bit_generator.state = d["rng"]
        self.asked[:] = False
        self.asked[np.asarray(d["asked"], dtype=np.int64)] = True
        self.obs_concept = [int(i) for i in d["obs_concept"]]
        self.obs_reward = [float(r) for r in d["obs_reward"]]
        self.obs_round = [int(r) for r in d["obs_round"]]
        # states saved before refinements: every observation was a first ask
        self.obs_refinement = [str(r) for r in d.get("obs_refinement", [""] * len(self.obs_concept))]
        self.obs_results = [int(n) for n in d.get("obs_results", [0] * len(self.obs_concept))]
        self.obs_kept = [int(n) for n in d.get("obs_kept", [-1] * len(self.obs_concept))]
        self.obs_summary = [None if q is None else [float(v) for v in q]
                            for q in d.get("obs_summary", [None] * len(self.obs_concept))]
        if not (len(self.obs_concept) == len(self.obs_refinement) == len(self.obs_results)
                == len(self.obs_kept) == len(self.obs_summary)):
            raise ValueError("policy state has observation lists of different lengths")
        self.refined = {int(i): set(r) for i, r in d.get("refined", {}).items()}
        self.ignored_outcomes = int(d.get("ignored_outcomes", 0))
        self.load_extra_state(d.get("extra", {}))
        self.fit()


def vocab_digest(concepts: list[str]) -> str:
    return hashlib.sha256(json.dumps(concepts, ensure_ascii=False).encode()).hexdigest()[:16]
