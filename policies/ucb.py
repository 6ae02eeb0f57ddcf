"""GP-UCB: the GP policy, but sampling on the optimistic score r̂(c) + β·σ(c).

Why: with the mean alone, a concept far from every observed query is predicted at the prior
mean and is reached only by the ε share of *uniform* draws, so exploration is blind. The
posterior standard deviation σ says where the GP knows little; adding β·σ (Srinivas et al.'s
GP-UCB) makes exploration go to unexplored *regions* of the embedding space, and shrinks there
as they are tried. We prefer UCB to Thompson sampling here because a Thompson draw needs the
joint posterior over the whole vocabulary ([N, N], N = 20.9k), whereas σ is one extra
triangular solve; the softmax over UCB scores still spreads a batch of n queries.
"""
from __future__ import annotations

import numpy as np

from policies.base import register
from policies.gp import GPPolicy, zscore


@register
class UCBPolicy(GPPolicy):
    name = "ucb"
    uses_std = True

    def scores(self) -> np.ndarray | None:
        if self.mean is None:
            return None
        return zscore(self.mean + float(self.cfg.ucb_beta) * self.std)
