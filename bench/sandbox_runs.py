"""Shared by the sandbox benchmarks: run the real loop on a sandbox target and score what it
downloaded against the world's ground truth (which the loop itself never sees)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from explorer.assemble import _drive, build, sandbox_for  # noqa: E402
from explorer.config import SANDBOX_PRESET, Config, apply_overrides  # noqa: E402
from explorer.sandbox import image_id_of_url  # noqa: E402
from explorer.session import RunDir  # noqa: E402

RELEVANT = 0.5   # world relevance at or above which an image counts as truly relevant


def run_sandbox(run_dir: Path, overrides: list[str]) -> tuple[RunDir, list[tuple[int, int]]]:
    """Runs `explore run` in-process with the sandbox preset plus `overrides`; returns the run
    and [(relevant, kept)] per round."""
    run = RunDir(run_dir)
    cfg = apply_overrides(Config(), SANDBOX_PRESET + [f"run.run_dir={run.root}"] + overrides)
    run.save_config(cfg)
    with sandbox_for(cfg) as sandbox:
        explorer, parts = build(run, cfg, sandbox, Console(quiet=True), quiet=True)
        try:
            _drive(explorer)
            rows = parts.cache.db.conn.execute("SELECT round, first_url FROM images").fetchall()
        finally:
            parts.close()
        world = sandbox.world
    rounds = len(run.read_rounds())
    per_round = [[0, 0] for _ in range(rounds)]
    for round_, url in rows:
        if round_ is None or round_ >= rounds:
            continue  # crawled for a round that was not trained before the stop
        image_id = image_id_of_url(url)
        rel = world.image_relevance(cfg.run.target, image_id) if image_id else 0.0
        per_round[round_][0] += int(rel >= RELEVANT)
        per_round[round_][1] += 1
    return run, [tuple(x) for x in per_round]
