"""How much of a linear-probe figure is the probe's choice of C, and does explore's lead hold
at every C?

The eval's probe (explorer/model/evaluate.py) picks C from a small sweep. Until 2026-12-03 it
picked on a 20% holdout of the labelled train images: 60 images on the sandbox's default target
(30 a class, 10 classes), and that pick alone moved a figure by up to 11 points; it now
cross-validates over every labelled image (eval.probe_folds). This reads the features that
`bench/e2e.py --keep-features DIR` kept (DIR/ARM-SEED/<checkpoint>/<target>-{train,test}.npz)
and prints, per arm and seed, with 100% and 10% of the labels (the eval's own label subsets):
  - test accuracy at each C of a wider sweep (what the figure would be at that C);
  - the C the eval's protocol picks (its folds drawn with seed eval.seed) and its test accuracy:
    what `explore eval` reports for these features today;
  - the range of test accuracies that other draws of the folds (seeds 0-9) would have reported;
then explore's lead over each other arm at each fixed C and at the eval's pick, mean (standard
error) over the seeds that have both. Last line: `lead_range_over_C=` explore's smallest and
largest mean lead over each arm across the fixed Cs, 100% labels: a lead that holds at every C
is not an artefact of the pick.

Where an arm's directory holds its run's record (record.json, written by --keep-features; its
`classes`: kept images of each target class), it also prints, per seed, whether explore gains
on a class where its crawl kept more of that class: the correlation over classes of explore's
per-class test accuracy lead (at each arm's picked C, 100% labels) with explore's kept images
of the class, and the same pooled over seeds (each seed's leads and counts centred first).

    python bench/probe_sweep.py DIR [--cs 0.001,0.01,0.1,1,10,100] [--draws 10]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from explorer.config import EvalConfig  # noqa: E402
from explorer.model.evaluate import label_subset, linear_probe  # noqa: E402
from e2e import read_features  # noqa: E402

FRACTIONS = (1.0, 0.1)


def read_record(arm_dir: Path) -> dict | None:
    """The run's bench/e2e.py record kept beside its features, or None."""
    try:
        return json.loads((arm_dir / "record.json").read_text())
    except (OSError, ValueError):
        return None


def class_accuracy(X: np.ndarray, y: np.ndarray, Xte: np.ndarray, yte: np.ndarray, C: float,
                   max_iter: int) -> np.ndarray:
    """Test accuracy in points of each class (label order) of the eval's probe refit at C."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)).fit(X, y)
    right = probe.predict(Xte) == yte
    return np.array([100 * right[yte == c].mean() for c in np.unique(yte)])


def sweep(X: np.ndarray, y: np.ndarray, Xte: np.ndarray, yte: np.ndarray, cs: list[float],
          max_iter: int) -> dict[float, float]:
    """Test accuracy in points of a probe fit on all of (X, y) at each C."""
    scaler = StandardScaler().fit(X)
    A, T = scaler.transform(X), scaler.transform(Xte)
    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    out = {}
    for C in cs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # (lbfgs may stop at max_iter on the weakest penalty)
            out[C] = 100 * float(model.set_params(C=C).fit(A, y).score(T, yte))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, help="bench/e2e.py's --keep-features directory")
    ap.add_argument("--cs", default="0.001,0.01,0.1,1,10,100", help="the C of each column")
    ap.add_argument("--draws", type=int, default=10, help="draws (seeds) of the probe's folds: the pick's range")
    args = ap.parse_args()
    cs = [float(c) for c in args.cs.split(",")]
    ev = EvalConfig()
    # rows[(arm, seed)][fraction] = {"at": {C: acc}, "picked": (C, acc), "draws": (lo, hi)}
    rows: dict[tuple[str, int], dict] = {}
    for arm_dir in sorted(p for p in args.dir.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(.+)-(\d+)", arm_dir.name)
        feats = read_features(arm_dir) if m else None
        if feats is None:
            print(f"{arm_dir.name}: no features, skipped")
            continue
        Xtr, ytr, Xte, yte = feats
        row = rows[(m.group(1), int(m.group(2)))] = {"record": read_record(arm_dir)}
        for fraction in FRACTIONS:
            idx = label_subset(ytr, fraction, ev.seed)
            at = sweep(Xtr[idx], ytr[idx], Xte, yte, cs, ev.max_iter)
            picks = {s: linear_probe(Xtr[idx], ytr[idx], Xte, yte, ev.probe_c, ev.probe_folds, s, ev.max_iter)
                     for s in {ev.seed, *range(args.draws)}}
            own = picks[ev.seed]
            accs = [100 * p["acc"] for p in picks.values()]
            row[fraction] = {"at": at, "picked": (own["best_C"], 100 * own["acc"]),
                             "draws": (min(accs), max(accs))}
            if fraction == 1.0:
                row["by_class"] = class_accuracy(Xtr[idx], ytr[idx], Xte, yte, own["best_C"], ev.max_iter)

    for fraction in FRACTIONS:
        print(f"\nlinear probe, {fraction:.0%} labels: test accuracy at each C; the eval's pick; "
              f"the range over {args.draws} draws of its folds")
        print(f"{'arm-seed':16s}" + "".join(f"{'C=' + format(c, 'g'):>9s}" for c in cs)
              + f"{'picked':>16s}{'draws':>14s}")
        for (arm, seed), row in sorted(rows.items()):
            r = row[fraction]
            (c_picked, acc_picked), (lo, hi) = r["picked"], r["draws"]
            name, picked, draws = f"{arm}-{seed}", f"C={c_picked:g}: {acc_picked:.1f}", f"{lo:.1f}-{hi:.1f}"
            print(f"{name:16s}" + "".join(f"{r['at'][c]:9.1f}" for c in cs) + f"{picked:>16s}{draws:>14s}")

    arms = sorted({arm for arm, _ in rows} - {"explore"})
    spans = {}
    for fraction in FRACTIONS:
        print(f"\nexplore's lead at each fixed C, {fraction:.0%} labels: mean (standard error) [seeds]")
        for other in arms:
            seeds = sorted(s for a, s in rows if a == other and ("explore", s) in rows)
            if not seeds:
                continue
            cells, means = [], []
            for c in cs:
                d = np.array([rows[("explore", s)][fraction]["at"][c] - rows[(other, s)][fraction]["at"][c]
                              for s in seeds])
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                cells.append(f"C={c:g} {d.mean():+.1f} ({se:.1f})")
                means.append(d.mean())
            d = np.array([rows[("explore", s)][fraction]["picked"][1] - rows[(other, s)][fraction]["picked"][1]
                          for s in seeds])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"eval's pick {d.mean():+.1f} ({se:.1f}) [{' '.join(f'{x:+.1f}' for x in d)}]")
            print(f"  over {other} [seeds {','.join(map(str, seeds))}]: " + "; ".join(cells))
            if fraction == 1.0:
                spans[other] = (min(means), max(means))
    print_coverage(rows, arms)
    print("lead_range_over_C=" + " ".join(f"{o}:{lo:+.1f}..{hi:+.1f}" for o, (lo, hi) in spans.items()))


def print_coverage(rows: dict[tuple[str, int], dict], arms: list[str]) -> None:
    """Per seed and pooled: does explore lead on the classes its crawl kept more of?"""
    seeds = sorted(s for a, s in rows if a == "explore" and (rows[(a, s)]["record"] or {}).get("classes"))
    if not seeds:
        return
    print("\nexplore's per-class lead (linear, 100% labels, each arm at its picked C) against its kept "
          "images of the class: correlation over classes")
    for other in arms:
        pooled_lead, pooled_kept, cells = [], [], []
        for s in seeds:
            if (other, s) not in rows:
                continue
            kept = np.asarray(rows[("explore", s)]["record"]["classes"], np.float64)
            lead = rows[("explore", s)]["by_class"] - rows[(other, s)]["by_class"]
            if len(kept) != len(lead):
                continue   # (a record of another target)
            cells.append(f"seed {s} {np.corrcoef(kept, lead)[0, 1]:+.2f} (kept {kept.min():.0f}-{kept.max():.0f}, "
                         f"lead {lead.min():+.0f}..{lead.max():+.0f})")
            pooled_lead.append(lead - lead.mean())
            pooled_kept.append(kept - kept.mean())
        if cells:
            pooled = np.corrcoef(np.concatenate(pooled_kept), np.concatenate(pooled_lead))[0, 1]
            print(f"  over {other}: " + "; ".join(cells) + f"; pooled {pooled:+.2f}")


if __name__ == "__main__":
    main()
