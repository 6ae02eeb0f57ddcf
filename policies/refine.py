"""Re-asking concepts that paid off: a concept's next results page, another image backend of
the engine, or one of its descriptors (a refinement; `explorer.records.Query`).

What a refinement is expected to pay is learnt from the run itself, in units of the spread of
first asks' rewards (z), so that it does not depend on the reward's scale:
- the next page p of a concept: the reward its page p-1 got, plus the mean change from one page
  to the next measured over every pair of consecutive pages asked so far;
- another backend, or a descriptor: the concept's first-ask reward, plus the mean change from a
  first ask to a refinement of that kind measured so far.
Each mean change starts at a prior (later pages and side queries pay less: PRIOR_CHANGE) and is
shrunk towards it by PRIOR_WEIGHT pseudo-observations. A concept whose page came back with less
than half of its first page's results has no further page. A concept is a candidate for
re-asking when its best refinement is expected to pay more than a new concept would: more
than the average first ask (z > 0), and more than the policy's own prediction for the new
concepts it would ask instead (the GP's posterior mean of its best unasked concepts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explorer.records import Query

PRIOR_CHANGE = {"page": -0.5, "backend": -0.5, "desc": -0.5}
PRIOR_WEIGHT = 3.0
KINDS = tuple(PRIOR_CHANGE)


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
    """One concept's finished queries: z-reward and results count by refinement."""

    z: dict[str, float] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)


def changes(by_concept: dict[int, Observed]) -> dict[str, float]:
    """The mean change in z that each kind of refinement brought, shrunk to its prior."""
    deltas: dict[str, list[float]] = {k: [] for k in KINDS}
    for seen in by_concept.values():
        if "" not in seen.z:
            continue
        for ref, z in seen.z.items():
            kind = kind_of(ref)
            if kind == "page":
                before = "" if page_of(ref) == 2 else f"page:{page_of(ref) - 1}"
                if before in seen.z:
                    deltas["page"].append(z - seen.z[before])
            elif kind in deltas:
                deltas[kind].append(z - seen.z[""])
    return {k: (sum(d) + PRIOR_WEIGHT * PRIOR_CHANGE[k]) / (len(d) + PRIOR_WEIGHT)
            for k, d in deltas.items()}


def expected(query: Query, seen: Observed, change: dict[str, float]) -> float | None:
    """The z-reward `query` is expected to bring, or None when nothing says (its page p-1 is
    not measured yet, or came back short)."""
    kind = kind_of(query.refinement)
    if kind == "page":
        before = "" if query.page == 2 else f"page:{query.page - 1}"
        if before not in seen.z:
            return None
        first = seen.results.get("", 0)
        if seen.results.get(before, 0) <= 0 or 2 * seen.results.get(before, 0) < first:
            return None   # that page was the last one
        return seen.z[before] + change["page"]
    return seen.z[""] + change[kind]


def observed(obs_concept: list[int], obs_reward: list[float], obs_refinement: list[str],
             obs_results: list[int]) -> dict[int, Observed]:
    """Observations by concept, rewards as z over first asks (the mean where one was repeated)."""
    rewards = np.asarray(obs_reward, dtype=np.float64)
    first = np.array([r == "" for r in obs_refinement], dtype=bool)
    if first.sum() < 2:
        return {}
    mu, sd = float(rewards[first].mean()), float(rewards[first].std())
    sd = sd if sd > 1e-12 else 1.0
    sums: dict[tuple[int, str], list[float]] = {}
    out: dict[int, Observed] = {}
    for i, r, ref, n in zip(obs_concept, rewards, obs_refinement, obs_results):
        sums.setdefault((i, ref), []).append((r - mu) / sd)
        seen = out.setdefault(i, Observed())
        seen.results[ref] = max(seen.results.get(ref, 0), int(n))
    for (i, ref), zs in sums.items():
        out[i].z[ref] = float(np.mean(zs))
    return out


def candidates(concepts: list[str], by_concept: dict[int, Observed],
               asked: dict[int, set[str]], offer: Refinements,
               floor: float = 0.0) -> list[tuple[float, Query]]:
    """For each concept whose best refinement is expected to pay more than `floor` (z; what a
    new concept is expected to pay), that refinement: (z, query)."""
    change = changes(by_concept)
    out = []
    for i, seen in by_concept.items():
        if "" not in seen.z:
            continue
        best: tuple[float, Query] | None = None
        for q in offer.options(concepts[i], asked.get(i, set())):
            value = expected(q, seen, change)
            if value is not None and (best is None or value > best[0]):
                best = (value, q)
        if best is not None and best[0] > floor:
            out.append(best)
    return out
