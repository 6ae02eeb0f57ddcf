"""TensorBoard: each finished round's scalars and a grid of its best concept's images, written
to RUN_DIR/tb (`tensorboard --logdir runs/`).

An `Explorer.after_round` observer: it gets the round's record (loop.RoundReport.to_json) once
the round is logged, reads the images from the run's cache through the database, opened
read-only for that moment, and writes with global_step = the round. A resumed run writes a new
events file into the same folder; TensorBoard reads them together. TensorBoard is an optional
extra (`pip install -e '.[tb]'`): without it `make_tensorboard` gives None and nothing is said.
"""
from __future__ import annotations

import math
from pathlib import Path

from cache.db import MetaDB
from explorer.session import RunDir

GRID_IMAGES = 16         # images of the round's best concept in its grid
GRID_SIDE = 96           # pixels a side of each image in the grid
GRID_ROW = 4             # images a row


def tensorboard_available() -> bool:
    """Whether torch.utils.tensorboard can write: it needs the tensorboard package."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def make_tensorboard(run: RunDir, cache_dir: Path) -> "TensorBoardWriter | None":
    """The run's TensorBoard writer, or None where tensorboard is not installed."""
    return TensorBoardWriter(run, cache_dir) if tensorboard_available() else None


def round_scalars(record: dict) -> dict[str, float]:
    """A round's record as TensorBoard tags: rewards, k-NN, losses, images, outcomes, throughput.
    Missing or non-finite values are left out (a round with no kept image has no mean reward)."""
    train = record.get("train") or {}
    seconds = record.get("seconds") or 0.0
    values = {
        "reward/mean": record.get("mean_reward"),
        "reward/best": record["best"][0][1] if record.get("best") else None,
        "knn_acc": record.get("knn_acc"),
        "train/loss": train.get("loss"),
        "train/pixel_loss": train.get("pixel_loss"),
        "train/caption_loss": train.get("caption_loss"),
        "train/lr": train.get("lr"),
        "train/steps": train.get("steps"),
        "crawl/queries": record.get("queries"),
        "crawl/failed_queries": record.get("failed_queries"),
        "crawl/results": record.get("results"),
        "crawl/fetched": record.get("fetched"),
        "crawl/kept": record.get("kept"),
        "throughput/train_images_per_s": train.get("images_per_s"),
        "throughput/fetched_per_s": record["fetched"] / seconds if seconds and "fetched" in record else None,
        "throughput/round_seconds": seconds or None,
    }
    values.update((f"outcomes/{kind}", n) for kind, n in (record.get("outcomes") or {}).items())
    return {tag: float(v) for tag, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def image_grid(paths: list[Path]):
    """uint8 [3, H, W]: the images that open, each cut to a GRID_SIDE square, GRID_ROW a row;
    None when none opens. A broken or missing file is skipped."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps
    from torchvision.utils import make_grid

    tiles = []
    for path in paths:
        try:
            with Image.open(path) as im:
                square = ImageOps.fit(im.convert("RGB"), (GRID_SIDE, GRID_SIDE))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        tiles.append(torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1))
    if not tiles:
        return None
    return make_grid(torch.stack(tiles), nrow=GRID_ROW, padding=2)


class TensorBoardWriter:
    """Called with each round's record; `close` at the end of the run. The events are flushed
    after every round, so a killed run keeps what it logged."""

    def __init__(self, run: RunDir, cache_dir: Path):
        self.run = run
        self.cache_dir = Path(cache_dir)
        self.logdir = run.root / "tb"
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:   # the events file is made by the first round, not before
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.logdir))
        return self._writer

    def __call__(self, record: dict) -> None:
        step = int(record["round"])
        for tag, value in round_scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=step)
        if record.get("best"):
            concept, reward = record["best"][0][0], record["best"][0][1]
            grid = image_grid(self.best_image_paths(concept))
            if grid is not None:
                self.writer.add_image("best_concept", grid, global_step=step, dataformats="CHW")
                self.writer.add_text("best_concept", f"{concept} (reward {reward:.3f})", global_step=step)
        self.writer.flush()

    def best_image_paths(self, concept: str) -> list[Path]:
        """Files of the concept's kept images, highest reward first, in the run's cache."""
        with MetaDB.reading(self.run.db_path, what="run database") as db:
            paths = db.best_image_paths(concept, GRID_IMAGES)
        return [p if p.is_absolute() else self.cache_dir / p for p in map(Path, paths)]

    def __repr__(self) -> str:   # how a failure names it on the console
        return f"tensorboard ({self.logdir})"

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
