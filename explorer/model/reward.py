"""Rewards: how much a query's images look like the target.

r(image) = mean cosine similarity of its embedding to its k nearest target-train embeddings
(current encoder); r(query) = mean over the query's kept images, or the floor when it kept none.
This module owns both and the floor rule; pure numpy + FAISS: the caller embeds images with
the model.

Centring. Every embedding of a ViT holds a large component that all images share (the mean of
the patch tokens carries the position embeddings and the norm layers' biases): raw cosines of an
untrained encoder all lie close to 1, and which images look like the target barely moves them.
Cosines are taken about a centre, the midpoint of the target's mean embedding and the web's (a
fixed background sample of crawled images), which removes that shared part and keeps the
direction from web to target, so relevant queries stand apart from the rest.

Contrast (reward.contrast, on by default). Some families of web images sit close to every
image, the target's included (hubs): an untrained encoder put antique furniture and bees level
with roses. `scored_rewards` subtracts each candidate's mean cosine to its k nearest images of the
web sample (`web_contrast`, the correction CSLS makes for word translation), so a reward says
how much closer an image is to the target than to the web at large; without it the hubs
outrank relevant images once the encoder has seen a few rounds.
"""
from __future__ import annotations

import faiss
import numpy as np

from explorer.config import RewardConfig


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def web_centre(target_emb: np.ndarray, background_emb: np.ndarray) -> np.ndarray:
    """The midpoint of the target's and the web's mean unit embeddings: [D] float32."""
    return (0.5 * (_unit(target_emb).mean(axis=0) + _unit(background_emb).mean(axis=0))).astype(np.float32)


def image_rewards(cand_emb: np.ndarray, target_emb: np.ndarray, k: int = 15,
                  centre: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine similarity of each candidate to its k nearest target images.

    cand_emb: [M, D], target_emb: [T, D] (normalised here; with a `centre` [D], the centre is
    subtracted from the unit embeddings and the result normalised again); k is clipped to [1, T].
    Returns float32 [M].
    """
    if target_emb.ndim != 2 or target_emb.shape[0] == 0:
        raise ValueError("image_rewards needs at least one target embedding [T, D]")
    if cand_emb.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    if cand_emb.shape[1] != target_emb.shape[1]:
        raise ValueError(f"embedding sizes differ: candidates {cand_emb.shape[1]}, "
                         f"target {target_emb.shape[1]}")
    k = max(1, min(int(k), target_emb.shape[0]))
    cand, target = _about(centre, cand_emb, target_emb)
    return _knn_mean(cand, target, k)


def _about(centre: np.ndarray | None, *embs: np.ndarray) -> list[np.ndarray]:
    """Unit embeddings; with a centre [D], taken about it (centre subtracted, normalised again)."""
    units = [_unit(e) for e in embs]
    if centre is None:
        return units
    centre = np.asarray(centre, dtype=np.float32).reshape(1, -1)
    return [_unit(u - centre) for u in units]


def _knn_mean(queries: np.ndarray, base: np.ndarray, k: int, skip_self: bool = False) -> np.ndarray:
    """Mean cosine of each (unit) query to its k nearest (unit) `base` rows; with `skip_self`,
    a row identical to the query (cosine ~1: the query itself) is not one of them."""
    kk = min(k + int(skip_self), base.shape[0])
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    sims, _ = index.search(queries, kk)   # best first: the query itself, if there, comes first
    if skip_self and kk > 1:
        sims = np.where(sims[:, :1] >= 1.0 - 1e-5, sims[:, 1:], sims[:, :-1])
    return sims[:, :k].mean(axis=1).astype(np.float32)


def web_contrast(cand_emb: np.ndarray, background_emb: np.ndarray, k: int,
                 centre: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine of each candidate to its k nearest web-sample images (itself excluded), about
    the same centre as `image_rewards`: [M] float32. Subtracted from the reward it corrects for
    hubness (as CSLS does for word translation): an image close to everything is not
    target-like for that."""
    if cand_emb.shape[0] == 0 or background_emb.shape[0] == 0:
        return np.zeros(cand_emb.shape[0], dtype=np.float32)
    cand, web = _about(centre, cand_emb, background_emb)
    return _knn_mean(cand, web, max(1, int(k)), skip_self=True)


def scored_rewards(cand_emb: np.ndarray, target_emb: np.ndarray, web: np.ndarray,
                   cfg: RewardConfig) -> np.ndarray:
    """r(image) [M] of candidates [M, D] against the target [T, D] as the run scores them: about
    the web sample's centre [W, D] (reward.centre = "web"), minus the hubness contrast
    (reward.contrast)."""
    centre = web_centre(target_emb, web) if cfg.centre == "web" else None
    rewards = image_rewards(cand_emb, target_emb, cfg.k, centre=centre)
    if cfg.contrast:
        rewards = rewards - web_contrast(cand_emb, web, cfg.k, centre=centre)
    return rewards


def query_rewards(query_to_image_rewards: dict[int, list[float]], floor: float = 0.0) -> dict[int, float]:
    """r(query) = mean of its kept images' rewards; `floor` for a query that kept none."""
    return {qid: float(np.mean(r)) if len(r) else float(floor)
            for qid, r in query_to_image_rewards.items()}


def floor_reward(per_query: dict[int, list[float]], cfg: RewardConfig) -> float:
    """The reward of a query that kept nothing, among these queries of one round
    (RewardConfig.floor_mode): "round_min", the lowest r(query) of those that kept some, so it
    is on the encoder's scale; else (or when none kept any) reward.floor."""
    scored = [float(np.mean(r)) for r in per_query.values() if r]
    if cfg.floor_mode == "round_min" and scored:
        return min(scored)
    return cfg.floor


def round_query_rewards(per_query: dict[int, list[float]], cfg: RewardConfig) -> dict[int, float]:
    """r(query) of one round's queries from their kept images' rewards, the floor for those
    that kept none."""
    return query_rewards(per_query, floor_reward(per_query, cfg))


def query_rewards_by_round(per_query: dict[int, list[float]], round_of: dict[int, int],
                           cfg: RewardConfig) -> dict[int, float]:
    """`round_query_rewards` for queries of several rounds (`round_of`: query id -> its
    round), each round with its own floor."""
    out: dict[int, float] = {}
    for round_ in sorted(set(round_of.values())):
        out.update(round_query_rewards({q: r for q, r in per_query.items() if round_of[q] == round_}, cfg))
    return out
