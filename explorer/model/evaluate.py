"""Scoring a frozen encoder on a target: linear probe and k-NN, with all labels and with a few.

Features are extracted once per (checkpoint, target, split) and cached as .npz. Label fractions
are drawn per class with a fixed seed, so every model is scored on the same labelled images.
- Linear probe: logistic regression (lbfgs, multinomial) on standardised features; C is chosen
  from a small sweep by stratified k-fold cross-validation on the labelled subset (every
  labelled image validates once: a single small holdout picked C by noise), then the probe is
  refit on the whole subset and scored on the test split.
- k-NN: DINO's weighted k-NN: cosine similarity to the k nearest labelled train features, each
  neighbour votes for its class with weight exp(similarity / T), T = 0.07.
Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np
from PIL import Image
from rich.table import Table
from rich.text import Text
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset, Subset

from cache.atomic import atomic_write
from explorer.config import EvalConfig
from explorer.inputs.targets import Target, TargetError, slug
from explorer.terminal import plain

EncodeFn = Callable[[list[Image.Image]], np.ndarray]   # B PIL images -> [B, D] features
PROTOCOLS = ("linear", "knn")


# ---------------------------------------------------------------------------------------------
# features

def _as_lists(batch: list[tuple[Image.Image, int]]) -> tuple[list[Image.Image], list[int]]:
    return [image for image, _ in batch], [label for _, label in batch]


def extract_features(encode_fn: EncodeFn, dataset: Dataset, batch_size: int = 256,
                     workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encode every image of `dataset` in order.

    Returns X: [N, D] float32 and y: [N] int64 (labels as the dataset gives them; -1 unlabelled).
    `workers` decode images in parallel processes; `encode_fn` runs in this one.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_as_lists)
    feats, labels = [], []
    for images, batch_labels in loader:
        out = np.asarray(encode_fn(images), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(images):
            raise ValueError(f"encode_fn returned shape {out.shape} for {len(images)} images; want [B, D]")
        feats.append(out)
        labels.extend(batch_labels)
    if not feats:
        raise ValueError("cannot extract features of an empty dataset")
    return np.concatenate(feats), np.asarray(labels, dtype=np.int64)


def checkpoint_id(path: str | Path) -> str:
    """An id that changes whenever the checkpoint file is replaced (name, size, mtime).
    Checkpoints are written to a temp file and renamed, so each write gets a new one."""
    st = os.stat(path)
    key = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{Path(path).stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def feature_path(cache_dir: str | Path, ckpt_id: str, target_name: str, split: str) -> Path:
    """Where the features of one (checkpoint, target, split) are cached."""
    return Path(cache_dir) / slug(ckpt_id) / f"{slug(target_name)}-{split}.npz"


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def cached_features(encode_fn: EncodeFn, dataset: Dataset, path: Path | None, batch_size: int = 256,
                    workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`extract_features`, read from / written to `path` (.npz) when given.
    A cache file that is unreadable or of another length is recomputed."""
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                X, y = z["X"], z["y"]
            if len(y) == len(dataset) == len(X):
                return X, y
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    X, y = extract_features(encode_fn, dataset, batch_size, workers)
    if path is not None:
        _save_npz_atomic(path, X=X, y=y)
    return X, y


# ---------------------------------------------------------------------------------------------
# labels

def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a per-class sample: round(fraction * n_c) of each class c, at least one.

    Each class draws from its own generator seeded by (seed, class), so a class's pick does
    not depend on the other classes. Returns sorted indices [M] int64.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], not {fraction}")
    y = np.asarray(y)
    if (y < 0).any():
        raise ValueError("label_subset needs labelled data (found label -1)")
    if fraction == 1.0:
        return np.arange(len(y))
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        n = max(1, round(fraction * len(members)))
        rng = np.random.default_rng([seed, int(c)])
        picked.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def _choose_c(X: np.ndarray, y: np.ndarray, Cs: list[float], folds: int, seed: int,
              max_iter: int) -> tuple[float, dict[float, float]]:
    """C by stratified k-fold cross-validation on the labelled set: every labelled image is
    validated once, by a probe fit on the other folds. Returns (best C, {C: validation accuracy}).

    The smaller C wins ties (stronger regularisation). A class with fewer members than folds
    is in fewer folds' validation (scikit-learn warns; silenced); a fold whose fit part has one
    class only is skipped. With a single C, or no class of 2+ members, nothing is chosen: the
    middle of the sweep, and no validation accuracies.
    """
    n_splits = min(folds, int(np.unique(y, return_counts=True)[1].max()))
    if len(Cs) < 2 or n_splits < 2:
        return Cs[len(Cs) // 2], {}
    correct = dict.fromkeys(Cs, 0)
    seen = 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y))
    for fit, val in splits:
        if len(np.unique(y[fit])) < 2:
            continue
        scaler = StandardScaler().fit(X[fit])
        A, V = scaler.transform(X[fit]), scaler.transform(X[val])
        model = LogisticRegression(max_iter=max_iter, warm_start=True)
        for C in Cs:   # small to large, each fit warm-started from the last
            correct[C] += int((model.set_params(C=C).fit(A, y[fit]).predict(V) == y[val]).sum())
        seen += len(val)
    if not seen:
        return Cs[len(Cs) // 2], {}
    val_acc = {C: correct[C] / seen for C in Cs}
    return max(Cs, key=lambda C: (val_acc[C], -C)), val_acc


# ---------------------------------------------------------------------------------------------
# protocols

def linear_probe(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray,
                 Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), folds: int = 5, seed: int = 0,
                 max_iter: int = 1000) -> dict:
    """Logistic-regression probe on standardised features. Xtr: [N, D], ytr: [N], Xte: [M, D], yte: [M].

    C is the one with the best accuracy in stratified `folds`-fold cross-validation on the
    train set (see `_choose_c`); the probe is then refit on all of train and scored on test.
    Returns {"acc": test accuracy, "best_C": C, "val_acc": {C: cross-validated accuracy}}.
    """
    if len(np.unique(ytr)) < 2:
        raise ValueError("a linear probe needs at least two classes in the train set")
    best_C, val_acc = _choose_c(Xtr, ytr, sorted(Cs), folds, seed, max_iter)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=best_C, max_iter=max_iter))
    probe.fit(Xtr, ytr)
    return {"acc": float(probe.score(Xte, yte)), "best_C": best_C, "val_acc": val_acc}


def knn_accuracy(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, k: int = 20,
                 temperature: float = 0.07) -> float:
    """Weighted k-NN accuracy (DINO). Xtr: [N, D], ytr: [N], Xte: [M, D], yte: [M].

    Cosine similarity (exact search, faiss IndexFlatIP on L2-normalised features); each of the
    k nearest train features votes for its label with weight exp(sim / temperature).
    """
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    train = np.ascontiguousarray(Xtr, dtype=np.float32).copy()
    test = np.ascontiguousarray(Xte, dtype=np.float32).copy()
    faiss.normalize_L2(train)
    faiss.normalize_L2(test)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    k = min(k, len(train))
    sims, nn = index.search(test, k)                                   # [M, k] each
    votes = np.zeros((len(test), int(max(ytr.max(), yte.max())) + 1))
    np.add.at(votes, (np.arange(len(test))[:, None], ytr[nn]), np.exp(sims / temperature))
    return float((votes.argmax(1) == yte).mean())


# ---------------------------------------------------------------------------------------------
# a target, end to end

def _require_labels(target: Target) -> None:
    if not target.labelled or target.test is None:
        raise TargetError(f"{target.name} is unlabelled: evaluation needs labelled train and test "
                          "images (a folder with class sub-folders, or train/ and test/ of them)")


def evaluate_target(encode_fn: EncodeFn, target: Target, cfg: EvalConfig,
                    protocols: Sequence[str] = PROTOCOLS, fractions: Sequence[float] | None = None,
                    feature_cache: Path | None = None, ckpt_id: str = "") -> dict:
    """Linear probe and/or k-NN accuracy of frozen features on `target`, per label fraction.

    `feature_cache` is a directory; features are cached there per (ckpt_id, target, split),
    so `ckpt_id` (e.g. `checkpoint_id(path)`) is required with it. `fractions` defaults to
    cfg.label_fractions. Returns
    {"target": name, "linear": {fraction: acc}, "knn": {fraction: acc}, "linear_C": {fraction: C},
     "n_labels": {fraction: labelled train images}, "n_train": N, "n_test": M,
     "classes": number of classes, "k": k}; a protocol not asked for is absent.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol {sorted(unknown)[0]!r}; choose from {', '.join(PROTOCOLS)}")
    if feature_cache is not None and not ckpt_id:
        raise ValueError("a feature cache needs the checkpoint's id (ckpt_id)")
    _require_labels(target)

    def features(split: str, dataset: Dataset):
        path = feature_path(feature_cache, ckpt_id, target.name, split) if feature_cache else None
        return cached_features(encode_fn, dataset, path, cfg.batch_size, cfg.workers)

    Xtr, ytr = features("train", target.train)
    Xte, yte = features("test", target.test)
    return {"target": target.name, "classes": len(target.classes),
            **score_features(Xtr, ytr, Xte, yte, cfg, protocols, fractions)}


def score_features(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, cfg: EvalConfig,
                   protocols: Sequence[str] = PROTOCOLS, fractions: Sequence[float] | None = None) -> dict:
    """The evaluation's protocols on features already made (train [N, D], [N]; test [M, D], [M]):
    evaluate_target's dict without "target" and "classes". bench/e2e.py --reprobe scores kept
    features with it, so that old runs read as today's eval would score them."""
    fractions = tuple(cfg.label_fractions if fractions is None else fractions)
    results: dict = {"n_train": len(ytr), "n_test": len(yte), "k": cfg.knn_k, "n_labels": {}}
    for protocol in protocols:
        results[protocol] = {}
    if "linear" in protocols:
        results["linear_C"] = {}
    for fraction in fractions:
        idx = label_subset(ytr, fraction, cfg.seed)
        results["n_labels"][fraction] = len(idx)
        if "linear" in protocols:
            probe = linear_probe(Xtr[idx], ytr[idx], Xte, yte, cfg.probe_c, cfg.probe_folds, cfg.seed,
                                 cfg.max_iter)
            results["linear"][fraction] = probe["acc"]
            results["linear_C"][fraction] = probe["best_C"]
        if "knn" in protocols:
            results["knn"][fraction] = knn_accuracy(Xtr[idx], ytr[idx], Xte, yte, cfg.knn_k,
                                                    cfg.knn_temperature)
    return results


def progress_knn(encode_fn: EncodeFn, target: Target, cfg: EvalConfig) -> float:
    """Cheap per-round progress signal: weighted k-NN accuracy on fixed random subsets of the
    target (at most cfg.progress_max_train train and cfg.progress_max_test test images, the
    same images every round). Nothing is cached: the encoder changes between rounds."""
    _require_labels(target)

    def sample(dataset: Dataset, n: int, salt: int) -> Dataset:
        if len(dataset) <= n:
            return dataset
        rng = np.random.default_rng([cfg.seed, salt])
        return Subset(dataset, np.sort(rng.choice(len(dataset), size=n, replace=False)).tolist())

    Xtr, ytr = extract_features(encode_fn, sample(target.train, cfg.progress_max_train, 0),
                                cfg.batch_size, cfg.workers)
    Xte, yte = extract_features(encode_fn, sample(target.test, cfg.progress_max_test, 1),
                                cfg.batch_size, cfg.workers)
    return knn_accuracy(Xtr, ytr, Xte, yte, cfg.knn_k, cfg.knn_temperature)


def intern_claim(results: dict, baseline: dict) -> dict:
    """INTERN's claim, that data from the web lets 10% of the labels do what all of them did
    without it: this run's linear probe with 10% of labels beside a baseline run's (on the same
    target) with 100%. ValueError where the two cannot be compared."""
    same = ("target", "n_train", "n_test", "classes")
    if any(results.get(k) != baseline.get(k) for k in same):
        raise ValueError(f"the baseline run is on another target ({baseline.get('target')}, "
                         f"{baseline.get('n_test')} test images) than this one "
                         f"({results.get('target')}, {results.get('n_test')})")
    mine = results.get("linear", {}).get(0.1)
    theirs = baseline.get("linear", {}).get(1.0)
    if mine is None or theirs is None:
        raise ValueError("INTERN's claim needs this run's linear probe at 10% of labels "
                         "(--protocol linear --label-fraction 0.1) and the baseline's at 100%")
    return {"linear_10": mine, "baseline_linear_100": theirs, "gap": mine - theirs}


def format_table(results: dict) -> Table:
    """The results of `evaluate_target` as a rich table: one row per protocol, one column per
    label fraction, accuracies in %."""
    fractions = sorted(results["n_labels"], reverse=True)
    table = Table(title=plain(f"{results['target']}: {results['n_train']} train / {results['n_test']} test "
                              f"images, {results['classes']} classes"))  # a folder's name is text
    table.add_column("protocol")
    for f in fractions:
        table.add_column(f"{f:.0%} labels ({results['n_labels'][f]})", justify="right")
    names = {"linear": "linear probe", "knn": f"k-NN (k={results['k']})"}
    for protocol in PROTOCOLS:
        if protocol in results:
            table.add_row(names[protocol], *(f"{100 * results[protocol][f]:.1f}" for f in fractions))
    notes = []
    if "linear_C" in results:
        notes.append("probe C: " + ", ".join(f"{f:.0%} → {results['linear_C'][f]:g}" for f in fractions))
    if "test_copies_removed" in results:  # (set by the run: its crawl's test_leak attempts)
        notes.append(f"test-image copies removed by the crawl: {results['test_copies_removed']}")
    if "intern_claim" in results:   # (set by `explore eval --baseline`)
        claim = results["intern_claim"]
        table.add_row("INTERN: linear, this run at 10% vs baseline at 100%",
                      *(f"{100 * claim['linear_10']:.1f} vs {100 * claim['baseline_linear_100']:.1f}"
                        if i == 0 else "" for i in range(len(fractions))))
        notes.append(f"INTERN's claim (10% of labels with web data match 100% without): "
                     f"{'met' if claim['gap'] >= 0 else 'not met'}, {100 * claim['gap']:+.1f} points; "
                     f"baseline {results['baseline'].get('run_dir', '')}")
    if notes:
        table.caption = Text("\n").join(plain(n) for n in notes)   # (a run directory's name is text)
    return table
