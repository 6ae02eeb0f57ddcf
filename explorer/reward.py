"""Rewards (DESIGN.md §2): how much a query's images look like the target.

r(image) = mean cosine similarity of its embedding to its k nearest target-train embeddings
(current encoder); r(query) = mean over the query's kept images, or the floor when it kept none.
Pure numpy + FAISS: the caller embeds images with the model.
"""
from __future__ import annotations

import faiss
import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def image_rewards(cand_emb: np.ndarray, target_emb: np.ndarray, k: int = 15) -> np.ndarray:
    """Mean cosine similarity of each candidate to its k nearest target images.

    cand_emb: [M, D], target_emb: [T, D] (normalised here); k is clipped to [1, T].
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
    index = faiss.IndexFlatIP(target_emb.shape[1])
    index.add(_unit(target_emb))
    sims, _ = index.search(_unit(cand_emb), k)
    return sims.mean(axis=1).astype(np.float32)


def query_rewards(query_to_image_rewards: dict[int, list[float]], floor: float = 0.0) -> dict[int, float]:
    """r(query) = mean of its kept images' rewards; `floor` for a query that kept none."""
    return {qid: float(np.mean(r)) if len(r) else float(floor)
            for qid, r in query_to_image_rewards.items()}
