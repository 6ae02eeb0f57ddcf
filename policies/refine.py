"""Re-asking concepts that paid off: a concept's next results page, another image backend of
the engine, or one of its descriptors (a refinement; `explorer.records.Query`).

What a refinement is expected to pay is learnt from the run itself, in units of the spread of
first asks' rewards (z), so that it does not depend on the reward's scale:
- the next page p of a concept: the reward its page p-1 got, plus the mean change from one page
  to the next measured over every pair of consecutive pages asked so far;
- another backend, or a descriptor: the concept's first-ask reward, plus the mean change from a
  first ask to a refinement of that kind measured so far.
Each mean change starts at a prior (later pages and side queries pay less: PRIOR_CHANGE) and is
shrunk towards it by PRIOR_WEIGHT pseudo-observations.

A query's reward is a mean over the images it kept, blind to how many it kept, while what a
query brings is its images: a descriptor that returns the pictures the first ask already fetched
keeps few new ones at the same mean. So a refinement is valued by the images it is expected to
bring, in units of a first ask: what it is expected to score above a query that brings nothing of
the target (the low tail of first asks' z: unrelated concepts), times its expected yield (new
images kept per image the ask before kept; measured per kind like the change in z, with its own
prior), plus that z again. A concept whose page came back with less than half of its first
page's results has no further page. A concept is a candidate for re-asking when its best
refinement is expected to bring more than a new concept would (Policy.new_query_value: the
lower of the policy's prediction and what the last round's first asks paid; late in a run, when
the good concepts are asked, that falls below the average first ask and the best pages win).

What re-asks are judged on is not the mean reward but the share of a query's images that look
like the target (`top_shares`): those above the TOP_PERCENTILE-th percentile of every image the
first asks kept. A mean blurs two different answers: a later page of a good concept holds its
concept's pictures mixed with off-topic ones, a look-alike concept only pictures a little like
the target, and the two can have the same mean while only the first brings pictures of the
target. Each query keeps the quantiles of its images' rewards (`summary`), from which its share
above any threshold is read. Observations without them (states saved before) are valued by
their mean reward when no observation has them, and left out otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from explorer.records import Query

PRIOR_CHANGE = {"page": -0.5, "backend": -0.5, "desc": -0.5}
PRIOR_YIELD = {"page": 0.8, "backend": 0.8, "desc": 0.8}   # new images kept, per image of the ask before
PRIOR_WEIGHT = 3.0
NONE_PERCENTILE = 10   # first asks this low brought nothing of the target: unrelated concepts (the
                       # very lowest is an outlier, e.g. a query that kept nothing and got the floor)
KINDS = tuple(PRIOR_CHANGE)
QUANTILES = np.linspace(0.1, 0.9, 9)   # of a query's image rewards, kept per observation
TOP_PERCENTILE = 70    # an image above this percentile of the first asks' images looks like the target


def kind_of(refinement: str) -> str:
    """"page", "backend", "desc", or "" for a first ask."""
    return refinement.partition(":")[0]


def page_of(refinement: str) -> int:
    return int(refinement.partition(":")[2]) if kind_of(refinement) == "page" else 1


@dataclass
class Refinements:
    """What the engine and the vocabulary offer beyond a concept's first ask."""

    pages: bool = False                   # the engine has further results pages
    backends: tuple[str, ...] = ()        # image sources besides the engine's default
    descriptors: dict[str, list[str]] = field(default_factory=dict)   # concept -> query texts
    max_page: int = 5

    def options(self, concept: str, asked: set[str]) -> list[Query]:
        """The refinements of `concept` not asked yet: its next page (if any is left), each
        backend, and its next descriptor (they are alike until one is measured)."""
        out = []
        page = 1 + max((page_of(r) for r in asked), default=1)
        if self.pages and page <= self.max_page:
            out.append(Query(concept, concept, f"page:{page}", page=page))
        out += [Query(concept, concept, f"backend:{b}", backend=b)
                for b in self.backends if f"backend:{b}" not in asked]
        for text in self.descriptors.get(concept, []):
            if f"desc:{text}" not in asked:
                out.append(Query(concept, text, f"desc:{text}"))
                break
        return out


@dataclass
class Observed:
    """One concept's finished queries by refinement: z-reward, results the engine answered and
    images kept (-1: not recorded, as in states saved before it was)."""

    z: dict[str, float] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)


@dataclass
class Model:
    """What refinements were measured to bring, over every concept (see the module's doc)."""

    change: dict[str, float]     # kind -> mean change in z from the ask before
    yields: dict[str, float]     # kind -> new images kept per image the ask before kept
    z_none: float                # z of a query whose images are all unrelated: the low tail of first asks


def before_of(refinement: str) -> str:
    """The ask a refinement is measured against: page p-1 for page p, else the first ask."""
    if kind_of(refinement) == "page" and page_of(refinement) > 2:
        return f"page:{page_of(refinement) - 1}"
    return ""


def shrunk(values: list[float], prior: float) -> float:
    return (sum(values) + PRIOR_WEIGHT * prior) / (len(values) + PRIOR_WEIGHT)


def learn(by_concept: dict[int, Observed]) -> Model:
    """The mean change in z and the mean yield each kind of refinement brought, shrunk to their
    priors."""
    deltas: dict[str, list[float]] = {k: [] for k in KINDS}
    ratios: dict[str, list[float]] = {k: [] for k in KINDS}
    firsts = [seen.z[""] for seen in by_concept.values() if "" in seen.z]
    for seen in by_concept.values():
        if "" not in seen.z:
            continue
        for ref, z in seen.z.items():
            kind, before = kind_of(ref), before_of(ref)
            if kind not in deltas or before not in seen.z:
                continue
            deltas[kind].append(z - seen.z[before])
            kept, kept_before = seen.kept.get(ref, -1), seen.kept.get(before, -1)
            if kept >= 0 and kept_before > 0:
                ratios[kind].append(min(kept / kept_before, 2.0))
    return Model(change={k: shrunk(d, PRIOR_CHANGE[k]) for k, d in deltas.items()},
                 yields={k: shrunk(r, PRIOR_YIELD[k]) for k, r in ratios.items()},
                 z_none=float(np.percentile(firsts, NONE_PERCENTILE)) if firsts else 0.0)


def expected(query: Query, seen: Observed, model: Model) -> float | None:
    """What `query` is expected to bring, in z of a first ask that kept as many images as the
    concept's first ask, or None when nothing says (the ask it follows is not measured yet, or
    was the concept's last page)."""
    kind, before = kind_of(query.refinement), before_of(query.refinement)
    if before not in seen.z:
        return None
    if kind == "page":
        first = seen.results.get("", 0)
        if seen.results.get(before, 0) <= 0 or 2 * seen.results.get(before, 0) < first:
            return None   # that page was the last one
    z = seen.z[before] + model.change[kind]
    # the ask before kept fewer images than the concept's first ask: so will this one
    kept_first, kept_before = seen.kept.get("", -1), seen.kept.get(before, -1)
    carried = min(kept_before / kept_first, 1.0) if kept_first > 0 and kept_before >= 0 and before else 1.0
    return model.z_none + (z - model.z_none) * model.yields[kind] * carried


def summary(image_rewards: list[float]) -> list[float]:
    """The QUANTILES of a query's image rewards ([] for a query that kept none)."""
    r = np.asarray([x for x in image_rewards if np.isfinite(x)], dtype=np.float64)
    return [round(float(v), 6) for v in np.quantile(r, QUANTILES)] if len(r) else []


def share_above(quantiles: list[float], threshold: float) -> float:
    """The share of a query's images above `threshold`, read from its quantiles (linear between
    them; halfway into the outer tenths beyond them)."""
    below = np.interp(threshold, quantiles, QUANTILES, left=QUANTILES[0] / 2, right=(1 + QUANTILES[-1]) / 2)
    return float(1.0 - below)


def top_threshold(summaries: list[list[float] | None], kept: list[int]) -> float | None:
    """The TOP_PERCENTILE-th percentile of the images behind `summaries` (first asks), each
    query's quantiles weighted by the images it kept; None where none kept any."""
    points = [(v, max(k, 1) / len(q)) for q, k in zip(summaries, kept) if q for v in q]   # (None, [] skipped)
    if not points:
        return None
    values, weights = np.array(points).T
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    at = np.searchsorted(cumulative, TOP_PERCENTILE / 100 * cumulative[-1])
    return float(values[order][min(at, len(values) - 1)])


class Judged(NamedTuple):
    """What re-asks are judged on, per observation (`top_shares`)."""
    values: np.ndarray     # [m] float64
    usable: np.ndarray     # [m] bool
    shares: bool           # values are shares of top images (True) or mean rewards (False)


def top_shares(obs_summary: list[list[float] | None], obs_reward: list[float], obs_refinement: list[str],
               obs_kept: list[int]) -> Judged:
    """What re-asks are judged on, per observation. The share of its images above the first
    asks' top threshold where observations carry their quantiles (None: not recorded; [] kept
    none, a share of 0); the mean reward (all usable) where none does."""
    has = np.array([q is not None for q in obs_summary], dtype=bool)
    first = np.array([not r for r in obs_refinement], dtype=bool)
    threshold = top_threshold([q for q, f in zip(obs_summary, first) if f],
                              [k for k, f in zip(obs_kept, first) if f]) if has.any() else None
    if threshold is None:
        return Judged(np.asarray(obs_reward, dtype=np.float64), np.ones(len(obs_reward), dtype=bool), False)
    shares = np.array([np.nan if q is None else share_above(q, threshold) if q else 0.0 for q in obs_summary])
    return Judged(shares, has, True)


def observed(obs_concept: list[int], obs_reward: list[float], obs_refinement: list[str],
             obs_results: list[int], obs_kept: list[int] | None = None) -> dict[int, Observed]:
    """Observations by concept, rewards as z over first asks (the mean where one was repeated)."""
    rewards = np.asarray(obs_reward, dtype=np.float64)
    first = np.array([r == "" for r in obs_refinement], dtype=bool)
    if first.sum() < 2:
        return {}
    mu, sd = float(rewards[first].mean()), float(rewards[first].std())
    sd = sd if sd > 1e-12 else 1.0
    kept_of = obs_kept if obs_kept is not None else [-1] * len(obs_concept)
    sums: dict[tuple[int, str], list[float]] = {}
    out: dict[int, Observed] = {}
    for i, r, ref, n, k in zip(obs_concept, rewards, obs_refinement, obs_results, kept_of):
        sums.setdefault((i, ref), []).append((r - mu) / sd)
        seen = out.setdefault(i, Observed())
        seen.results[ref] = max(seen.results.get(ref, 0), int(n))
        seen.kept[ref] = max(seen.kept.get(ref, -1), int(k))
    for (i, ref), zs in sums.items():
        out[i].z[ref] = float(np.mean(zs))
    return out


def candidates(concepts: list[str], by_concept: dict[int, Observed],
               asked: dict[int, set[str]], offer: Refinements,
               floor: float = 0.0) -> list[tuple[float, Query]]:
    """For each concept whose best refinement is expected to bring more than `floor` (z of a
    first ask; what a new concept is expected to bring), that refinement: (value, query)."""
    model = learn(by_concept)
    out = []
    for i, seen in by_concept.items():
        if "" not in seen.z:
            continue
        best: tuple[float, Query] | None = None
        for q in offer.options(concepts[i], asked.get(i, set())):
            value = expected(q, seen, model)
            if value is not None and (best is None or value > best[0]):
                best = (value, q)
        if best is not None and best[0] > floor:
            out.append(best)
    return out
