"""Time the GP policy on a full vocabulary: update (hyper-parameter fit + conditioning +
prediction for every concept) and sample, with N observed queries.

    PYTHONPATH=. python bench/gp_speed.py --obs 2000 [--vocab imagenet21k] [--policy gp|ucb] [--random-emb]

Rewards are synthetic (a smooth function of the embedding plus noise); only time matters here.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from explorer.config import Config
from explorer.records import QueryOutcome
from explorer.inputs.vocab import concept_embeddings, load_vocab
from policies.registry import make_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default="imagenet21k")
    ap.add_argument("--obs", type=int, default=2000)
    ap.add_argument("--policy", default="gp")
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--embedding-cache", default=Config().policy.embedding_cache)
    ap.add_argument("--random-emb", action="store_true", help="random 384-d unit vectors instead of the text model's")
    args = ap.parse_args()
    cfg = Config()
    concepts = load_vocab(args.vocab)
    rng = np.random.default_rng(0)
    if args.random_emb:
        emb = rng.normal(size=(len(concepts), 384)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    else:
        emb = concept_embeddings(concepts, cfg.policy.text_model, args.embedding_cache)
    truth = emb @ emb[rng.integers(len(emb))]
    policy = make_policy(args.policy, concepts, emb, cfg.policy, seed=0)
    seen = rng.choice(len(concepts), size=args.obs, replace=False)
    outcomes = [QueryOutcome(concepts[i], concepts[i], 0, 10, 5, float(truth[i] + 0.02 * rng.normal()))
                for i in seen]
    t0, c0 = time.perf_counter(), time.process_time()
    policy.update(outcomes)
    t1, c1 = time.perf_counter(), time.process_time()
    picked = policy.sample(args.queries)
    t2 = time.perf_counter()
    policy.sample(args.queries)          # now with the first batch pending (ucb re-derives σ)
    t3 = time.perf_counter()
    unseen = np.setdiff1d(np.arange(len(concepts)), seen)
    corr = np.corrcoef(policy.mean[unseen], truth[unseen])[0, 1]
    print(f"{args.policy}: {len(concepts)} concepts x {emb.shape[1]} dims, {args.obs} observations: "
          f"update (fit + predict all) {t1 - t0:.2f} s wall, {c1 - c0:.2f} s CPU (all threads), "
          f"sample {len(picked)} in {t2 - t1:.3f} s, again with those pending {t3 - t2:.2f} s; "
          f"corr(pred, truth) on unobserved {corr:.3f}; kernel {policy.theta and np.exp(policy.theta).round(3).tolist()}")


if __name__ == "__main__":
    main()
