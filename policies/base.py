"""The policy interface: which concepts to search for next (DESIGN.md §2).

A policy sees concepts, their text embeddings and the rewards of finished queries; never the
network or the model. Every policy:
- `sample(n)`: n distinct concepts, none asked before while untried ones remain (a repeated
  query brings back the engine's same results, i.e. duplicates);
- `update(outcomes)`: learns from finished queries (rewards may be a round old);
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
from explorer.records import QueryOutcome


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
                 rng: np.random.Generator) -> list[tuple[str, str]]:
    """(concept, text) pairs: a `share` of the concepts get a random descriptor
    ("<descriptor> <concept>", e.g. "watercolor tulip") to diversify what the engine returns."""
    out = []
    for concept in concepts:
        if descriptors and share > 0 and rng.random() < share:
            out.append((concept, f"{descriptors[rng.integers(len(descriptors))]} {concept}"))
        else:
            out.append((concept, concept))
    return out


def load_descriptors(path: str) -> list[str]:
    """Descriptor words from a file, one a line ("" = none); normalised and deduplicated."""
    if not path:
        return []
    from explorer.vocab import file_concepts

    return file_concepts(path)


class Policy(ABC):
    """Chooses concepts; learns from query rewards. Subclasses implement `scores`."""

    name: ClassVar[str] = ""

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
        self.ignored_outcomes = 0     # concept not in the vocabulary, or reward not finite

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

    def sample(self, n: int) -> list[str]:
        """min(n, candidates) distinct concepts; untried ones first, repeats only once every
        candidate was asked."""
        mask = self.candidates()
        n = min(int(n), int(mask.sum()))
        scores = self.scores()
        if scores is None:
            scores = np.zeros(len(self.concepts))
        tau, eps = self.sampling_params()
        picked = softmax_sample(scores, n, tau, eps, self.rng, allowed=mask & ~self.asked)
        if len(picked) < n:  # every candidate asked already: the rest may repeat
            again = mask.copy()
            again[picked] = False
            more = softmax_sample(scores, n - len(picked), tau, eps, self.rng, allowed=again)
            picked = np.concatenate([picked, more])
        self.asked[picked] = True
        return [self.concepts[i] for i in picked]

    def sample_queries(self, n: int, descriptors: list[str] = (), share: float = 0.0) -> list[tuple[str, str]]:
        """`sample(n)` as (concept, query text) pairs, a `share` with a descriptor; uses the
        policy's own generator so that a resumed run asks the same queries."""
        return make_queries(self.sample(n), list(descriptors), share, self.rng)

    def search_failed(self, concepts: list[str]) -> None:
        """Searches that got no answer (the engine was unavailable): those concepts are not
        asked, since nothing was learnt about them, and carry no observation."""
        self._mark_asked(concepts, False)

    def asked_again(self, concepts: list[str]) -> None:
        """Failed searches the loop asks again: asked, so `sample` does not pick them twice."""
        self._mark_asked(concepts, True)

    def _mark_asked(self, concepts: list[str], asked: bool) -> None:
        idx = [self.index[c] for c in concepts if c in self.index]
        self.asked[np.asarray(idx, dtype=np.int64)] = asked

    def update(self, outcomes: list[QueryOutcome]) -> None:
        for o in outcomes:
            i = self.index.get(o.concept)
            if i is None or not np.isfinite(o.reward):
                self.ignored_outcomes += 1
                continue
            self.obs_concept.append(i)
            self.obs_reward.append(float(o.reward))
            self.obs_round.append(int(o.round))
            self.asked[i] = True
        self.fit()

    def refresh_rewards(self, fresh: dict[tuple[str, int], float]) -> int:
        """Replace the rewards of observed queries by values the current encoder gave them:
        `fresh` maps (concept, round) to a reward. Observations it does not name keep theirs.
        Does not refit: the next `update` conditions on the refreshed values. Returns how many
        observations changed."""
        changed = 0
        for j, (i, round_) in enumerate(zip(self.obs_concept, self.obs_round)):
            r = fresh.get((self.concepts[i], round_))
            if r is not None and np.isfinite(r):
                self.obs_reward[j] = float(r)
                changed += 1
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
        self.ignored_outcomes = int(d.get("ignored_outcomes", 0))
        self.load_extra_state(d.get("extra", {}))
        self.fit()


def vocab_digest(concepts: list[str]) -> str:
    return hashlib.sha256(json.dumps(concepts, ensure_ascii=False).encode()).hexdigest()[:16]


POLICIES: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, concepts: list[str], embeddings: np.ndarray, cfg: PolicyConfig,
                seed: int, relevance: dict[str, float] | None = None) -> Policy:
    """The policy registered as `name` (gp, ucb, random, oracle); `relevance` for oracle only."""
    import policies.gp, policies.oracle, policies.random, policies.ucb  # noqa: F401  (register)

    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: choose from {', '.join(sorted(POLICIES))}")
    if name == "oracle":
        return POLICIES[name](concepts, embeddings, cfg, seed, relevance=relevance)
    return POLICIES[name](concepts, embeddings, cfg, seed)
