"""TensorBoard (explorer/run/tensorboard.py): each round's scalars and its best concept's images
go to RUN_DIR/tb, read back here with tensorboard's own reader; without tensorboard installed a
run writes nothing there and says nothing about it."""
import hashlib
import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cache.db import MetaDB
from cache.paths import image_relpath
from explorer.run.tensorboard import GRID_SIDE, make_tensorboard, round_scalars
from tests.run_fixtures import make_run

SMALL_RUN = ["--rounds", "1", "--quiet",
             "--set", "crawl.queries_per_round=4", "--set", "crawl.results_per_query=8",
             "--set", "train.steps_per_round=3", "--set", "train.batch_size=8",
             "--set", "eval.progress_max_train=60", "--set", "eval.progress_max_test=40"]


def events(logdir):
    reader = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install -e '.[tb]', or '.[dev]')")
    acc = reader.EventAccumulator(str(logdir), size_guidance={reader.IMAGES: 0, reader.SCALARS: 0})
    acc.Reload()
    return acc


def record(round_: int, concept: str, kept: int) -> dict:
    """A round's record as loop.RoundReport.to_json makes it."""
    return {"round": round_, "queries": 4, "results": 30, "fetched": 28, "kept": kept,
            "mean_reward": 0.1 * round_, "best": [[concept, 0.5 + round_], ["other", 0.1]],
            "train": {"loss": 2.0 - round_, "pixel_loss": 1.0, "caption_loss": 1.0 - round_,
                      "steps": 3, "images_per_s": 40.0, "lr": 1e-3, "step": 3 * (round_ + 1)},
            "knn_acc": None if round_ == 0 else 0.25, "seconds": 14.0, "failed_queries": 1,
            "outcomes": {"ok": kept, "http_error": 28 - kept}}


def kept_images(run, concept: str, round_: int, good: int, broken: int) -> None:
    """`good` JPEG files and `broken` files that are no image, kept by a query for `concept`."""
    cache_dir = run.cache_dir(run.load_config())
    with MetaDB(run.db_path) as db, db.transaction():
        db.start_round(round_)
        qid = db.add_query(round_, concept, concept, "sandbox")
        rewards = {}
        for i in range(good + broken):
            sha = hashlib.sha256(f"{concept}{round_}{i}".encode()).hexdigest()
            path = cache_dir / image_relpath(sha)
            path.parent.mkdir(parents=True, exist_ok=True)
            if i < good:
                Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(path, "JPEG")
            else:
                path.write_bytes(b"not a picture")
            db.add_image(sha, image_relpath(sha), 60, 40, 60, 40, query_id=qid, round=round_)
            rewards[sha] = 1.0 - i / 10
        db.set_image_rewards(rewards)


def test_each_round_s_scalars_and_image_grid_load_with_tensorboards_reader(tmp_path):
    run = make_run(tmp_path / "run")
    kept_images(run, "red rose", 0, good=3, broken=1)
    kept_images(run, "tulip", 1, good=5, broken=0)
    tb = make_tensorboard(run, run.cache_dir(run.load_config()))
    if tb is None:
        pytest.skip("tensorboard is not installed (pip install -e '.[tb]', or '.[dev]')")
    tb(record(0, "red rose", kept=3))
    tb(record(1, "tulip", kept=5))
    tb.close()
    again = make_tensorboard(run, run.cache_dir(run.load_config()))   # a resumed run: same folder
    again(record(2, "tulip", kept=5))
    again.close()

    acc = events(run.root / "tb")
    scalars = acc.Tags()["scalars"]
    for tag in ("reward/mean", "reward/best", "train/loss", "train/caption_loss", "crawl/kept",
                "crawl/fetched", "crawl/failed_queries", "outcomes/ok", "outcomes/http_error",
                "throughput/train_images_per_s", "throughput/fetched_per_s"):
        assert tag in scalars, tag
    assert [(e.step, e.value) for e in acc.Scalars("crawl/kept")] == [(0, 3), (1, 5), (2, 5)]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([2.0, 1.0, 0.0])
    assert [e.step for e in acc.Scalars("knn_acc")] == [1, 2]        # round 0 had no k-NN
    assert acc.Scalars("throughput/fetched_per_s")[0].value == pytest.approx(2.0)

    grids = acc.Images("best_concept")
    assert [g.step for g in grids] == [0, 1, 2]
    side = GRID_SIDE + 2 * 2
    # round 0: three of its four files open (the broken one is skipped), in one row of the grid
    assert (grids[0].width, grids[0].height) == (3 * (GRID_SIDE + 2) + 2, side)
    assert (grids[1].width, grids[1].height) == (4 * (GRID_SIDE + 2) + 2, 2 * (GRID_SIDE + 2) + 2)


def test_round_scalars_leave_out_what_a_round_did_not_measure():
    rec = record(0, "rose", kept=0)
    rec["mean_reward"] = float("nan")
    rec["best"] = []
    scalars = round_scalars(rec)
    assert "reward/mean" not in scalars and "reward/best" not in scalars and "knn_acc" not in scalars
    assert scalars["crawl/queries"] == 4.0 and scalars["outcomes/http_error"] == 28.0


@pytest.mark.parametrize("installed", [pytest.param(True, marks=pytest.mark.slow), False])
def test_a_run_writes_tensorboard_events_only_where_tensorboard_is_installed(tmp_path, monkeypatch, installed):
    """A real one-round sandbox run through the CLI. Made unimportable, tensorboard is neither
    written nor mentioned."""
    from cli import app

    if installed:
        pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[tb]')")
    else:
        monkeypatch.setitem(sys.modules, "tensorboard", None)   # import tensorboard -> ImportError
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--target", "sandbox-flowers", "--run-dir", str(run_dir),
                                      "--data-root", str(tmp_path / "data"), *SMALL_RUN],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert (run_dir / "rounds.jsonl").exists()
    if not installed:
        assert not (run_dir / "tb").exists()
        said = result.output.replace(str(tmp_path), "RUN").lower()   # (the test's name is in the path)
        assert "tensorboard" not in said and "warning" not in said
        return
    acc = events(run_dir / "tb")
    logged = json.loads((run_dir / "rounds.jsonl").read_text().splitlines()[0])
    assert [(e.step, e.value) for e in acc.Scalars("crawl/kept")] == [(0, logged["kept"])]
    assert [e.step for e in acc.Images("best_concept")] == [0]
