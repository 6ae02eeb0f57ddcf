"""bench/probe_sweep.py's per-class reading: whether explore's lead on a class follows the images
its crawl kept of that class (a finding of issue #18 rests on it, so its arithmetic is tested)."""
import json

import numpy as np
import pytest

from tests.test_bench_settings import bench_module

sweep = bench_module("probe_sweep")


def rows_for(seeds, kept, explore_acc, random_acc):
    rows = {}
    for s in seeds:
        rows[("explore", s)] = {"record": {"classes": kept[s]}, "by_class": np.asarray(explore_acc[s], float)}
        rows[("random", s)] = {"record": {"classes": [0] * len(kept[s])}, "by_class": np.asarray(random_acc[s], float)}
    return rows


def test_coverage_correlation_per_seed_and_pooled(capsys):
    rng = np.random.default_rng(0)
    kept = {s: rng.integers(5, 400, 10).tolist() for s in (0, 1)}
    explore = {s: rng.uniform(30, 90, 10) for s in (0, 1)}
    random = {s: rng.uniform(30, 90, 10) for s in (0, 1)}
    sweep.print_coverage(rows_for((0, 1), kept, explore, random), ["random"])
    out = capsys.readouterr().out
    lead = {s: explore[s] - random[s] for s in (0, 1)}
    for s in (0, 1):
        assert f"seed {s} {np.corrcoef(kept[s], lead[s])[0, 1]:+.2f}" in out
    centred = lambda d: np.concatenate([np.asarray(d[s], float) - np.mean(d[s]) for s in (0, 1)])  # noqa: E731
    assert f"pooled {np.corrcoef(centred(kept), centred(lead))[0, 1]:+.2f}" in out


def test_a_lead_that_follows_coverage_reads_as_a_correlation_of_one(capsys):
    kept = {0: [10, 20, 30, 40]}
    sweep.print_coverage(rows_for((0,), kept, {0: [50, 52, 54, 56]}, {0: [50, 50, 50, 50]}), ["random"])
    assert "seed 0 +1.00" in capsys.readouterr().out


def test_without_records_nothing_is_claimed(capsys):
    rows = {("explore", 0): {"record": None, "by_class": np.ones(3)},
            ("random", 0): {"record": None, "by_class": np.ones(3)}}
    sweep.print_coverage(rows, ["random"])
    assert capsys.readouterr().out == ""


def test_record_reading_survives_a_missing_or_broken_file(tmp_path):
    assert sweep.read_record(tmp_path) is None
    (tmp_path / "record.json").write_text("{not json")
    assert sweep.read_record(tmp_path) is None
    (tmp_path / "record.json").write_text(json.dumps({"classes": [1, 2]}))
    assert sweep.read_record(tmp_path) == {"classes": [1, 2]}


def test_class_accuracy_is_each_class_share_right():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(c * 3.0, 1.0, (40, 4)) for c in range(3)])
    y = np.repeat(np.arange(3), 40)
    Xte = np.concatenate([rng.normal(c * 3.0, 1.0, (20, 4)) for c in range(3)])
    Xte[40:] = rng.normal(0.0, 1.0, (20, 4))   # class 2's test images look like class 0's
    yte = np.repeat(np.arange(3), 20)
    acc = sweep.class_accuracy(X, y, Xte, yte, C=1.0, max_iter=1000)
    assert acc.shape == (3,)
    assert acc[0] == pytest.approx(100.0, abs=10) and acc[2] < 20


def test_reprobe_scores_kept_features_as_todays_eval_does(tmp_path):
    from explorer.config import EvalConfig
    from explorer.model.evaluate import score_features

    e2e = bench_module("e2e")
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(size=(60, 8)) + y[:, None]
    yte = np.repeat(np.arange(3), 10)
    Xte = rng.normal(size=(30, 8)) + yte[:, None]
    kept = tmp_path / "explore-0" / "latest-abc"
    kept.mkdir(parents=True)
    np.savez(kept / "sandbox-flowers-train.npz", X=X, y=y)
    np.savez(kept / "sandbox-flowers-test.npz", X=Xte, y=yte)
    logged = {"acc": [1.0, 2.0, 3.0, 4.0], "linear_C": [0.01, 0.01], "relevant": 5, "kept": 9}
    again = e2e.reprobe(logged, tmp_path / "explore-0")
    ev = score_features(X, y, Xte, yte, EvalConfig(), ("linear", "knn"), (1.0, 0.1))
    assert again["acc"] == [100 * ev[p][f] for p, f in e2e.METRICS]
    assert again["linear_C"] == [ev["linear_C"][1.0], ev["linear_C"][0.1]]
    assert (again["relevant"], again["kept"], again["reprobed"]) == (5, 9, True)
    assert logged["acc"] == [1.0, 2.0, 3.0, 4.0]   # the logged record is not changed
    assert e2e.reprobe(logged, tmp_path / "random-0") is None   # nothing kept: the log stands
