"""Internet Explorer's policy: a Gaussian process from concept embedding to query reward,
a prediction for every concept of the vocabulary, and p(c) ∝ exp(r̂(c)/τ) plus ε uniform.

Speed on the full vocabulary (20.9k concepts × 384 dims, thousands of observed queries):
- repeated concepts are averaged and the training set is capped at `max_observations`
  (half the most recent, the rest the best rewarded);
- hyper-parameters (signal variance, RBF length-scale, noise) are fitted by sklearn's optimiser
  on a random subset of at most `gp_fit_points` of them, warm-started from the last fit; the GP
  is then conditioned on the whole training set with those hyper-parameters;
- prediction runs in chunks with a kernel whose cross-covariance is one matrix product
  (`DotRBF`) instead of scipy's pairwise-distance loop.
Predictions are z-scored over the vocabulary before the softmax, so that τ does not depend on
the reward's scale, which drifts as the encoder trains.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from threadpoolctl import threadpool_limits

from policies.base import Policy, zscore
from policies.registry import register

PREDICT_CHUNK = 2048   # rows of the [chunk, m] cross-covariance held at once
# Unit text embeddings: related concepts ("red rose", "white rose") lie ~0.6 apart. A shorter
# length-scale fitted on a few noisy rewards explains them as noise and predicts nothing.
LENGTH_SCALE_MIN = 0.3
# Rewards are normalised to unit variance; a query's reward is a mean over a few dozen noisy
# images, so at least this share of its variance is noise (else the GP interpolates the noise).
NOISE_MIN = 0.05


class DotRBF(RBF):
    """sklearn's RBF, with k(X, Y) computed as exp(-(|x|² + |y|² - 2x·y) / 2ℓ²) by one BLAS
    product where no gradient is asked (scipy's cdist/pdist loops are slower on the sizes a
    vocabulary makes); the hyper-parameter fit (with gradients) uses RBF's own code."""

    def __call__(self, X, Y=None, eval_gradient=False):
        if eval_gradient:
            return super().__call__(X, Y, eval_gradient)
        scale = np.asarray(self.length_scale, dtype=np.float64)
        Xs = np.asarray(X, dtype=np.float64) / scale
        Ys = Xs if Y is None else np.asarray(Y, dtype=np.float64) / scale
        sq = (Xs * Xs).sum(1)[:, None] + (Ys * Ys).sum(1)[None, :] - 2.0 * (Xs @ Ys.T)
        K = np.exp(-0.5 * np.maximum(sq, 0.0))
        if Y is None:
            np.fill_diagonal(K, 1.0)
        return K


def default_kernel():
    return (ConstantKernel(1.0, (1e-3, 1e3)) * DotRBF(1.0, (LENGTH_SCALE_MIN, 2e1))
            + WhiteKernel(0.1, (NOISE_MIN, 1e1)))


@register
class GPPolicy(Policy):
    name = "gp"
    uses_std = False   # UCB needs the posterior standard deviation too

    def __init__(self, concepts, embeddings, cfg, seed):
        super().__init__(concepts, embeddings, cfg, seed)
        self.theta: list[float] | None = None   # fitted log hyper-parameters
        self._refit_hyper = False
        self.mean: np.ndarray | None = None     # [N] posterior mean of the reward
        self.std: np.ndarray | None = None      # [N] posterior standard deviation

    def training_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Concepts observed by a first ask with their mean reward, capped: (idx [m], y [m])."""
        obs, reward, rounds = self.first_asks()
        idx, inverse = np.unique(obs, return_inverse=True)
        y = np.bincount(inverse, weights=reward) / np.bincount(inverse)
        last = np.full(len(idx), np.iinfo(np.int64).min)
        np.maximum.at(last, inverse, rounds)
        cap = max(int(self.cfg.max_observations), 2)
        if len(idx) > cap:
            recent = np.lexsort((idx, -last))[: cap // 2]
            rest = np.setdiff1d(np.arange(len(idx)), recent)
            best = rest[np.lexsort((idx[rest], -y[rest]))[: cap - len(recent)]]
            keep = np.sort(np.concatenate([recent, best]))
            idx, y = idx[keep], y[keep]
        return idx, y

    def update(self, outcomes) -> None:
        self._refit_hyper = True
        super().update(outcomes)

    def fit(self) -> None:
        if not any(not r for r in self.obs_refinement):
            self.mean = self.std = None
            return
        idx, y = self.training_set()
        X = self.embeddings[idx].astype(np.float64)
        kernel = default_kernel()
        if self.theta is not None:
            kernel = kernel.clone_with_theta(np.asarray(self.theta))
        if self.theta is None or self._refit_hyper:
            kernel = self._fit_hyperparameters(kernel, X, y)
            self.theta = kernel.theta.tolist()
            self._refit_hyper = False
        gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None).fit(X, y)
        self.mean, self.std = self._predict(gp)

    def _fit_hyperparameters(self, kernel, X: np.ndarray, y: np.ndarray):
        """Maximise the marginal likelihood on at most `gp_fit_points` points (deterministic)."""
        if len(y) < 3:
            return kernel
        sub_rng = np.random.default_rng([self.seed, len(self.obs_concept)])
        m = min(len(y), int(self.cfg.gp_fit_points))
        sub = np.sort(sub_rng.choice(len(y), size=m, replace=False))
        gp = GaussianProcessRegressor(kernel, normalize_y=True,
                                      n_restarts_optimizer=int(self.cfg.gp_restarts),
                                      random_state=int(sub_rng.integers(2**31)))
        # Matrices of a few hundred rows gain nothing from BLAS threads, and threads that
        # spin-wait on a busy machine make each small Cholesky far slower.
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X[sub], y[sub])
        return gp.kernel_

    def _predict(self, gp) -> tuple[np.ndarray, np.ndarray | None]:
        means, stds = [], []
        for start in range(0, len(self.concepts), PREDICT_CHUNK):
            chunk = self.embeddings[start:start + PREDICT_CHUNK].astype(np.float64)
            if self.uses_std:
                m, s = gp.predict(chunk, return_std=True)
                stds.append(s)
            else:
                m = gp.predict(chunk)
            means.append(m)
        return np.concatenate(means), (np.concatenate(stds) if self.uses_std else None)

    def scores(self) -> np.ndarray | None:
        return None if self.mean is None else zscore(self.mean)

    def predicted_reward(self) -> np.ndarray | None:
        return self.mean

    def extra_state(self) -> dict:
        return {"theta": self.theta}

    def load_extra_state(self, d: dict) -> None:
        self.theta = d.get("theta")
        self._refit_hyper = False
