"""Shared by the sandbox benchmarks: run the real loop on a sandbox target and score what it
downloaded against the world's ground truth (which the loop itself never sees)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from explorer.run.assemble import _drive, build, sandbox_for  # noqa: E402
from explorer.config import SANDBOX_PRESET, Config, apply_overrides  # noqa: E402
from explorer.sandbox import image_id_of_url  # noqa: E402
from explorer.session import RunDir  # noqa: E402

RELEVANT = 0.5   # world relevance at or above which an image counts as truly relevant


def defaults_fingerprint() -> str:
    """A short hash of every setting a sandbox run starts from (Config's defaults under the
    sandbox preset). Bench logs record it, so a run made under older defaults is never read
    back as if it had been made under today's."""
    return hashlib.sha256(repr(apply_overrides(Config(), SANDBOX_PRESET)).encode()).hexdigest()[:12]


def run_sandbox(run_dir: Path, overrides: list[str], by_kind: dict[str, list[int]] | None = None,
                by_class: dict[str, int] | None = None) -> tuple[RunDir, list[tuple[int, int]]]:
    """Runs `explore run` in-process with the sandbox preset plus `overrides`; returns the run
    and [(relevant, kept)] per round. `by_kind`, when given, is filled with [queries, relevant,
    kept] per kind of query: "first" (a concept's first ask), "page", "backend", "desc";
    `by_class` with the kept images that show each of the target's classes (every class a key)."""
    run = RunDir(run_dir)
    cfg = apply_overrides(Config(), SANDBOX_PRESET + [f"run.run_dir={run.root}"] + overrides)
    run.save_config(cfg)
    with sandbox_for(cfg) as sandbox:
        explorer, parts = build(run, cfg, sandbox, Console(quiet=True), quiet=True)
        try:
            _drive(explorer)
            db = parts.cache.db.conn
            rows = db.execute("SELECT round, first_url FROM images").fetchall()
            queries = db.execute("SELECT q.id, q.refinement, i.first_url FROM queries q "
                                 "LEFT JOIN images i ON i.query_id = q.id WHERE q.round < ?",
                                 (len(run.read_rounds()),)).fetchall()
        finally:
            parts.close()
        world = sandbox.world
    rounds = len(run.read_rounds())
    per_round = [[0, 0] for _ in range(rounds)]
    if by_class is not None:
        by_class.update({c: 0 for c in world.target_classes(cfg.run.target)})
    for round_, url in rows:
        if round_ is None or round_ >= rounds:
            continue  # crawled for a round that was not trained before the stop
        image_id = image_id_of_url(url)
        rel = world.image_relevance(cfg.run.target, image_id) if image_id else 0.0
        per_round[round_][0] += int(rel >= RELEVANT)
        per_round[round_][1] += 1
        if by_class is not None and image_id:
            shown = world.target_class_shown(cfg.run.target, image_id)
            if shown is not None:
                by_class[shown] += 1
    if by_kind is not None:
        seen: set[int] = set()
        for query_id, refinement, url in queries:
            counts = by_kind.setdefault(refinement.partition(":")[0] or "first", [0, 0, 0])
            counts[0] += query_id not in seen
            seen.add(query_id)
            if url:
                image_id = image_id_of_url(url)
                counts[1] += int(image_id is not None and world.image_relevance(cfg.run.target, image_id) >= RELEVANT)
                counts[2] += 1
    return run, [tuple(x) for x in per_round]
