"""Linear probe, k-NN, label subsets and the feature cache, on small synthetic data."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from torch.utils.data import Dataset

from explorer.config import EvalConfig
from explorer.model.evaluate import (cached_features, checkpoint_id, evaluate_target, extract_features,
                               feature_path, format_table, intern_claim, knn_accuracy, label_subset, linear_probe,
                               progress_knn)
from explorer.inputs.targets import Target, TargetError

FAST = EvalConfig(workers=0, batch_size=16, probe_c=(0.1, 1.0), max_iter=200)


def clusters(n_per_class, n_classes=5, dim=16, spread=0.3, seed=0):
    """Separable Gaussian clusters: X [n*C, D] float32, y [n*C]."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[y] + spread * rng.normal(size=(len(y), dim))
    return X.astype(np.float32), y


# ---------------------------------------------------------------- protocols

def held_out_clusters(n_train, n_test, n_classes=5, dim=16, seed=0):
    X, y = clusters(n_train + n_test, n_classes, dim, seed=seed)
    test = np.zeros(len(y), bool)
    for c in range(n_classes):
        test[np.flatnonzero(y == c)[:n_test]] = True
    return X[~test], y[~test], X[test], y[test]


def test_probe_and_knn_separate_clusters():
    Xtr, ytr, Xte, yte = held_out_clusters(30, 20)
    probe = linear_probe(Xtr, ytr, Xte, yte, Cs=(1.0, 0.01, 0.1), folds=5, seed=0)
    assert probe["acc"] >= 0.95
    assert set(probe["val_acc"]) == {0.01, 0.1, 1.0}
    assert probe["best_C"] == max(sorted(probe["val_acc"]), key=lambda C: (probe["val_acc"][C], -C))
    assert knn_accuracy(Xtr, ytr, Xte, yte, k=20) >= 0.95


def test_random_labels_give_chance_accuracy():
    rng = np.random.default_rng(3)
    Xtr, Xte = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(500, 16)).astype(np.float32)
    ytr, yte = rng.integers(0, 5, 300), rng.integers(0, 5, 500)
    assert linear_probe(Xtr, ytr, Xte, yte, Cs=(0.1, 1.0))["acc"] < 0.32    # chance is 0.2
    assert knn_accuracy(Xtr, ytr, Xte, yte, k=20) < 0.32


def test_knn_weights_votes_by_similarity():
    # two far neighbours of class 1 lose against one identical neighbour of class 0
    Xtr = np.array([[1, 0], [0.2, 1], [0.2, -1]], np.float32)
    ytr = np.array([0, 1, 1])
    assert knn_accuracy(Xtr, ytr, np.array([[1, 0]], np.float32), np.array([0]), k=3) == 1.0


def test_probe_with_single_member_classes_still_fits():
    Xtr, ytr, Xte, yte = held_out_clusters(30, 10)
    idx = label_subset(ytr, 0.04, seed=0)                  # one or two per class
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # (scikit-learn's few-members warning stays inside)
        out = linear_probe(Xtr[idx], ytr[idx], Xte, yte, Cs=(0.1, 1.0, 10.0))
    assert out["acc"] >= 0.9
    one_each = label_subset(ytr, 0.01, seed=0)             # one a class: nothing to validate on
    out = linear_probe(Xtr[one_each], ytr[one_each], Xte, yte, Cs=(0.1, 1.0, 10.0))
    assert out["best_C"] == 1.0 and out["val_acc"] == {}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_c_is_cross_validated_over_every_labelled_image(seed):
    """Each C's validation accuracy is that of k-fold cross-validation (every labelled image
    predicted once by a probe that did not see it), as scikit-learn computes it; not a small
    holdout's, which picked C by noise."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    Xtr, ytr, Xte, yte = held_out_clusters(40, 10, dim=32, seed=seed)
    Xtr = Xtr + np.random.default_rng(seed).normal(scale=8.0, size=Xtr.shape).astype(np.float32)  # overlap
    Cs = (0.001, 0.01, 0.1, 1.0)
    out = linear_probe(Xtr, ytr, Xte, yte, Cs=Cs, folds=4, seed=seed)
    for C in Cs:
        pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)),
                                 Xtr, ytr, cv=StratifiedKFold(4, shuffle=True, random_state=seed))
        assert abs(out["val_acc"][C] - (pred == ytr).mean()) <= 2 / len(ytr)   # warm starts: ~same optimum
    assert out["best_C"] == max(Cs, key=lambda C: (out["val_acc"][C], -C))
    assert len({round(v * len(ytr)) for v in out["val_acc"].values()}) > 1     # C mattered here


# ---------------------------------------------------------------- label subsets

def test_label_subset_is_per_class_seeded_and_sized():
    y = np.repeat(np.arange(4), [100, 50, 7, 1])
    idx = label_subset(y, 0.1, seed=0)
    counts = np.bincount(y[idx], minlength=4)
    assert counts.tolist() == [10, 5, 1, 1]                # round(0.1 n), at least one
    assert np.array_equal(idx, label_subset(y, 0.1, seed=0))
    assert not np.array_equal(idx, label_subset(y, 0.1, seed=1))
    assert np.array_equal(idx, np.unique(idx))             # sorted, no repeats
    assert np.array_equal(label_subset(y, 1.0, seed=0), np.arange(len(y)))
    # a class's pick does not depend on the other classes
    only_first = label_subset(y[:100], 0.1, seed=0)
    assert np.array_equal(only_first, idx[y[idx] == 0])
    with pytest.raises(ValueError):
        label_subset(y, 0.0, seed=0)
    with pytest.raises(ValueError):
        label_subset(np.array([0, -1]), 0.5, seed=0)


# ---------------------------------------------------------------- features, cache, end to end

COLOURS = np.array([[230, 30, 30], [30, 220, 40], [40, 40, 230], [220, 220, 30]])


class ColourImages(Dataset):
    """Noisy 8x8 images whose colour is their class."""

    def __init__(self, n_per_class, seed, labelled=True):
        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(len(COLOURS)), n_per_class)
        noise = rng.normal(0, 25, size=(len(self.labels), 8, 8, 3))
        self.pixels = np.clip(COLOURS[self.labels][:, None, None] + noise, 0, 255).astype(np.uint8)
        self.labelled = labelled

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.fromarray(self.pixels[i]), int(self.labels[i]) if self.labelled else -1


class CountingEncoder:
    """encode_fn: flattened pixels in [0, 1]; counts the images it is asked to encode."""

    def __init__(self):
        self.images = 0

    def __call__(self, images):
        self.images += len(images)
        return np.stack([np.asarray(im, np.float32).reshape(-1) / 255 for im in images])


def colour_target(n_train=10, n_test=5):
    return Target("colours", ColourImages(n_train, 0), ColourImages(n_test, 1),
                  ["red", "green", "blue", "yellow"])


def test_extract_features_keeps_order_and_shapes():
    ds = ColourImages(5, 0)
    X, y = extract_features(CountingEncoder(), ds, batch_size=3)
    assert X.shape == (20, 192) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(y, ds.labels)
    assert np.allclose(X[7], np.asarray(ds[7][0], np.float32).reshape(-1) / 255)
    with pytest.raises(ValueError, match="want \\[B, D\\]"):
        extract_features(lambda images: np.zeros(len(images)), ds, batch_size=4)


def test_evaluate_target_reaches_high_accuracy_and_formats(tmp_path):
    results = evaluate_target(CountingEncoder(), colour_target(), FAST, fractions=(1.0, 0.1))
    assert results["n_train"] == 40 and results["n_test"] == 20 and results["classes"] == 4
    assert results["n_labels"] == {1.0: 40, 0.1: 4}
    for protocol in ("linear", "knn"):
        assert set(results[protocol]) == {1.0, 0.1}
        assert results[protocol][1.0] >= 0.95 and results[protocol][0.1] >= 0.9
    json.loads(json.dumps(results))                        # serialisable for --json
    console = Console(record=True, width=120)
    console.print(format_table(results))
    text = console.export_text()
    assert "linear probe" in text and "k-NN (k=20)" in text and "100% labels (40)" in text
    assert f"{100 * results['knn'][0.1]:.1f}" in text


def test_intern_claim_row_compares_ten_percent_with_a_baselines_hundred():
    results = evaluate_target(CountingEncoder(), colour_target(), FAST, fractions=(1.0, 0.1))
    baseline = dict(results, linear={1.0: 0.5}, run_dir="runs/target-only[red]")
    results["baseline"] = baseline
    results["intern_claim"] = claim = intern_claim(results, baseline)
    assert claim == {"linear_10": results["linear"][0.1], "baseline_linear_100": 0.5,
                     "gap": pytest.approx(results["linear"][0.1] - 0.5)}
    console = Console(record=True, width=160)
    console.print(format_table(results))
    text = console.export_text()
    assert f"{100 * results['linear'][0.1]:.1f} vs 50.0" in text and "met, +" in text
    assert "runs/target-only[red]" in text              # a path is text, not markup
    with pytest.raises(ValueError, match="another target"):
        intern_claim(results, dict(baseline, n_test=99))
    with pytest.raises(ValueError, match="needs this run's linear probe at 10%"):
        intern_claim(dict(results, linear={1.0: 0.9}), baseline)


def test_one_protocol_only():
    results = evaluate_target(CountingEncoder(), colour_target(), FAST, protocols=("knn",), fractions=(1.0,))
    assert "linear" not in results and set(results["knn"]) == {1.0}
    with pytest.raises(ValueError, match="unknown protocol 'svm'"):
        evaluate_target(CountingEncoder(), colour_target(), FAST, protocols=("svm",))


def test_feature_cache_is_reused_per_checkpoint(tmp_path):
    encoder, target = CountingEncoder(), colour_target()
    first = evaluate_target(encoder, target, FAST, feature_cache=tmp_path, ckpt_id="round-3")
    assert encoder.images == 60
    again = evaluate_target(encoder, target, FAST, feature_cache=tmp_path, ckpt_id="round-3")
    assert encoder.images == 60 and again == first          # read back, nothing encoded
    evaluate_target(encoder, target, FAST, feature_cache=tmp_path, ckpt_id="round-4")
    assert encoder.images == 120                            # another checkpoint: new features
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 4 and all(f.endswith(".npz") for f in files)   # no temp files left
    with pytest.raises(ValueError, match="needs the checkpoint's id"):
        evaluate_target(encoder, target, FAST, feature_cache=tmp_path)


def test_broken_cache_file_is_recomputed(tmp_path):
    ds, encoder = ColourImages(2, 0), CountingEncoder()
    path = feature_path(tmp_path, "ckpt", "colours", "train")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    X, y = cached_features(encoder, ds, path)
    assert encoder.images == 8 and X.shape == (8, 192)
    assert np.array_equal(cached_features(encoder, ds, path)[1], y) and encoder.images == 8


def test_checkpoint_id_changes_when_the_file_is_replaced(tmp_path):
    ckpt = tmp_path / "latest.pt"
    ckpt.write_bytes(b"a")
    first = checkpoint_id(ckpt)
    assert first == checkpoint_id(ckpt) and first.startswith("latest-")
    ckpt.write_bytes(b"bb")
    assert checkpoint_id(ckpt) != first


def test_unlabelled_target_cannot_be_evaluated():
    target = Target("folder:/photos", ColourImages(3, 0, labelled=False), None, [])
    with pytest.raises(TargetError, match="folder:/photos is unlabelled: evaluation needs labelled"):
        evaluate_target(CountingEncoder(), target, FAST)
    with pytest.raises(TargetError, match="unlabelled"):
        progress_knn(CountingEncoder(), target, FAST)


def test_progress_knn_uses_fixed_subsets():
    cfg = EvalConfig(workers=0, progress_max_train=12, progress_max_test=6)
    encoder = CountingEncoder()
    acc = progress_knn(encoder, colour_target(), cfg)
    assert encoder.images == 18 and acc >= 0.8
    assert progress_knn(encoder, colour_target(), cfg) == acc


def test_extract_features_with_decoding_workers_matches_in_process():
    ds, encoder = ColourImages(4, 0), CountingEncoder()
    X0, y0 = extract_features(encoder, ds, batch_size=5, workers=0)
    X2, y2 = extract_features(encoder, ds, batch_size=5, workers=2)
    assert np.array_equal(X0, X2) and np.array_equal(y0, y2)
