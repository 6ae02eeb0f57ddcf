"""GP-UCB: the GP policy, but sampling on the optimistic score r̂(c) + β·σ(c).

Why: with the mean alone, a concept far from every observed query is predicted at the prior
mean and is reached only by the ε share of *uniform* draws, so exploration is blind. The
posterior standard deviation σ says where the GP knows little; adding β·σ (Srinivas et al.'s
GP-UCB) makes exploration go to unexplored *regions* of the embedding space, and shrinks there
as they are tried. We prefer UCB to Thompson sampling here because a Thompson draw needs the
joint posterior over the whole vocabulary ([N, N], N = 20.9k), whereas σ is one extra
triangular solve; the softmax over UCB scores still spreads a batch of n queries.

Rewards arrive a round late (crawling overlaps training), so the concepts asked last round are
still pending when the next round is sampled. As in GP-BUCB (Desautels et al.), σ is computed
as if the pending concepts were observed (σ does not depend on the values; the mean stays that
of the real observations): the next round does not send its exploration to the same regions
again before their rewards are in.
"""
from __future__ import annotations

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor

from policies.base import zscore
from policies.gp import GPPolicy, default_kernel
from policies.registry import register


@register
class UCBPolicy(GPPolicy):
    name = "ucb"
    uses_std = True
    hallucinate_pending = True

    def __init__(self, concepts, embeddings, cfg, seed):
        super().__init__(concepts, embeddings, cfg, seed)
        self._pending_std: tuple[bytes, np.ndarray] | None = None   # (pending set, σ)

    def pending(self) -> np.ndarray:
        """Concepts asked whose reward has not come back: int64 [P]."""
        waiting = self.asked.copy()
        waiting[np.asarray(self.obs_concept, dtype=np.int64)] = False
        return np.flatnonzero(waiting)

    def fit(self) -> None:
        super().fit()
        self._pending_std = None

    def std_with_pending(self) -> np.ndarray:
        """σ [N] of the GP conditioned on the observed and the pending concepts."""
        pending = self.pending()
        if not self.hallucinate_pending or pending.size == 0:
            return self.std
        key = pending.tobytes()
        if self._pending_std is None or self._pending_std[0] != key:
            idx, y = self.training_set()
            idx_all = np.concatenate([idx, np.setdiff1d(pending, idx)])
            # σ does not depend on the rewards, only on where they were observed; fit on zeros
            # in the normalised units of the real fit, then scale back as normalize_y does.
            kernel = default_kernel().clone_with_theta(np.asarray(self.theta))
            gp = GaussianProcessRegressor(kernel, normalize_y=False, optimizer=None)
            gp.fit(self.embeddings[idx_all].astype(np.float64), np.zeros(len(idx_all)))
            scale = float(np.std(y)) or 1.0
            self._pending_std = (key, scale * self._predict(gp)[1])
        return self._pending_std[1]

    def scores(self) -> np.ndarray | None:
        if self.mean is None:
            return None
        return zscore(self.mean + float(self.cfg.ucb_beta) * self.std_with_pending())
