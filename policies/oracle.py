"""The benchmark's upper bound (sandbox only): draws from the truly relevant concepts, with
p(c) ∝ relevance(c). The ground truth is passed in by the caller; this module never imports
the sandbox."""
from __future__ import annotations

import numpy as np

from explorer.inputs.vocab import normalise_concept
from policies.base import Policy
from policies.registry import register


@register
class OraclePolicy(Policy):
    name = "oracle"
    reasks = False     # draws relevant concepts only: the bound of asking each concept once
    takes_prior = False

    def __init__(self, concepts, embeddings, cfg, seed, relevance: dict[str, float] | None = None):
        if relevance is None:
            raise ValueError("the oracle policy needs the world's relevance (sandbox targets only)")
        super().__init__(concepts, embeddings, cfg, seed)
        by_name = {normalise_concept(k).casefold(): float(v) for k, v in relevance.items()}
        self.relevance = np.array([max(by_name.get(c.casefold(), 0.0), 0.0) for c in self.concepts])
        if not (self.relevance > 0).any():
            raise ValueError("the oracle's relevance marks no concept of the vocabulary as relevant")

    def candidates(self) -> np.ndarray:
        return self.relevance > 0

    def sampling_params(self) -> tuple[float, float]:
        return 1.0, 0.0    # exp(log relevance) = relevance; no uniform share

    def scores(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.relevance)
