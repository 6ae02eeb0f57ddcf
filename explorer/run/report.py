"""What a run learned, read back from its directory: `explore status` and `explore rewards`.

Reads only: the database (opened read-only), rounds.jsonl, budget.json and the checkpoints.
"""
from __future__ import annotations

import csv
import io
import json
from contextlib import AbstractContextManager
from pathlib import Path

from rich import box
from rich.table import Table

from cache.db import MetaDB
from explorer.session import RunDir
from explorer.terminal import plain, visible


def _open(run: RunDir) -> AbstractContextManager[MetaDB]:
    """The run's database, read-only, closed after; one that cannot be read is CorruptRunState."""
    return MetaDB.reading(run.db_path, what="run database")


def pace(cfg, rounds_done: int, images: int, spent_s: float) -> dict:
    """Throughput per hour of budget spent, and the time and rounds left at that pace: the
    budget's, or less where run.rounds or run.max_images stops the run first (`ends_by`)."""
    hours = spent_s / 3600
    left = [(max(0.0, cfg.run.hours * 3600 - spent_s), "budget")]
    if cfg.run.rounds and rounds_done:
        left.append((max(0, cfg.run.rounds - rounds_done) * spent_s / rounds_done, "rounds"))
    if cfg.run.max_images and images:
        left.append((max(0, cfg.run.max_images - images) * spent_s / images, "max_images"))
    seconds, ends_by = min(left)
    per_round = spent_s / rounds_done if rounds_done and spent_s > 0 else None
    return {
        "images_kept_per_hour": round(images / hours, 1) if hours > 0 else None,
        "rounds_per_hour": round(rounds_done / hours, 2) if hours > 0 else None,
        "estimated_left_s": round(seconds, 1),
        "ends_by": ends_by,
        "rounds_left": int(seconds / per_round + 1e-9) if per_round else None,
    }


def status(run: RunDir) -> dict:
    """Rounds done, queries, images kept, outcome counts, training steps, budget, checkpoint."""

    cfg = run.load_config()
    rounds = run.read_rounds()
    with _open(run) as db:
        counts = db.query_counts()
        images, _ = db.image_stats()
        outcomes = db.outcome_counts(most_first=True)
    spent = budget_spent_s(run)
    cache = run.cache_dir(cfg)
    cache_bytes = sum(p.stat().st_size for p in (cache / "images").rglob("*") if p.is_file()) \
        if (cache / "images").exists() else 0
    last = rounds[-1] if rounds else {}
    return {
        "run_dir": str(run.root),
        "target": cfg.run.target,
        "rounds_done": len(rounds),
        "queries": counts.total,
        # a failed search is a row each time; "retry" ones are asked again in a later round
        "failed_queries": counts.failed,
        "queries_pending_retry": counts.retry,
        "queries_reasking": counts.reasks,
        # crawled ahead, while the last round trained: rewarded once a round trains on them
        "queries_awaiting_reward": counts.awaiting,
        "images_kept": images,
        "outcomes": outcomes,
        "train_steps": int(last.get("train", {}).get("step", 0)),
        "budget_used_s": round(float(spent), 1),
        "budget_left_s": round(max(0.0, cfg.run.hours * 3600 - float(spent)), 1),
        "cache_bytes": cache_bytes,
        "last_checkpoint_round": last.get("round") if run.latest_checkpoint.exists() else None,
        "last_knn_acc": last.get("knn_acc"),
        **pace(cfg, len(rounds), images, float(spent)),
    }


def budget_spent_s(run: RunDir) -> float:
    """Seconds of budget the run has spent, as its heartbeat last saved them (0 before any)."""
    try:
        return float(json.loads(run.budget_path.read_text())["spent_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def concept_rewards(run: RunDir, fresh: bool = True) -> list[dict]:
    """Every concept asked, best first: `reward` is the mean over its first asks (what the
    concept itself paid; a later page pays less by design), `reasks` how many times it was
    re-asked (another page, backend or descriptor) and `reask_reward` their mean; `n` and
    `kept` count all its queries. `fresh`: each query's latest reward (re-scored by a later
    encoder where the run refreshed it), else the reward of its own round; `scored_round` is
    the latest round whose encoder scored one."""
    with _open(run) as db:
        return [r._asdict() for r in db.concept_rewards(fresh)]


def query_rows(run: RunDir) -> list[dict]:
    """Every query; `reward` is the one of its own round, `fresh_reward` a later encoder's;
    `refinement` how it re-asked its concept ("" = a first ask), with its `page` and `backend`."""
    with _open(run) as db:
        return db.query_table()


def rounds_table(rounds: list[dict]) -> Table:
    table = Table(title="Rounds", box=box.SIMPLE_HEAD)
    for col in ("round", "queries", "fetched", "kept", "reward", "k-NN", "loss"):
        table.add_column(col, justify="right", no_wrap=True, min_width=max(len(col), 5))
    table.add_column("best concepts", overflow="fold", min_width=16)
    for r in rounds:
        knn = r.get("knn_acc")
        loss = r.get("train", {}).get("loss")
        cells = (
            r["round"], r["queries"], r["fetched"], r["kept"],
            f"{r['mean_reward']:.3f}" if r.get("mean_reward") is not None else "-",
            f"{100 * knn:.1f}%" if knn is not None else "-",
            f"{loss:.2f}" if loss is not None else "-",
            ", ".join(str(c) for c, _ in r.get("best", [])[:3]),
        )
        table.add_row(*map(plain, cells))  # rounds.jsonl is a file anyone can edit
    return table


def concepts_table(concepts: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in ("concept", "queries", "images kept", "reward", "re-asks", "re-ask reward",
                "encoder of round"):
        table.add_column(col, justify="left" if col == "concept" else "right")
    for c in concepts:
        again = c.get("reask_reward")
        table.add_row(plain(c["concept"]), str(c["n"]), str(c["kept"] or 0), f"{c['reward']:.3f}",
                      str(c.get("reasks") or 0), f"{again:.3f}" if again is not None else "-",
                      str(c.get("scored_round", "-")))
    return table


def export(run: RunDir, fmt: str) -> str:
    rows = query_rows(run)
    if fmt == "json":
        return json.dumps({"rounds": run.read_rounds(), "queries": rows}, indent=1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()) if rows else ["id"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot(run: RunDir, cache_dir: Path, top: int = 6, per_concept: int = 6) -> list[Path]:
    """Reward curves and a grid of sample images of the best concepts, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    run.plots.mkdir(parents=True, exist_ok=True)
    rounds = run.read_rounds()
    out = []
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    ax[0].plot([r["round"] for r in rounds], [r["mean_reward"] for r in rounds], marker="o")
    ax[0].set_xlabel("round"), ax[0].set_ylabel("mean query reward")
    knn = [(r["round"], r["knn_acc"]) for r in rounds if r.get("knn_acc") is not None]
    if knn:
        ax[1].plot(*zip(*knn), marker="o")
    ax[1].set_xlabel("round"), ax[1].set_ylabel("target k-NN accuracy")
    fig.tight_layout()
    path = run.plots / "rewards.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out.append(path)

    best = concept_rewards(run)[:top]
    with _open(run) as db:
        fig, axes = plt.subplots(len(best) or 1, per_concept, figsize=(per_concept * 1.3, (len(best) or 1) * 1.4),
                                 squeeze=False)
        for i, c in enumerate(best):
            paths = db.best_image_paths(c["concept"], per_concept)
            for j in range(per_concept):
                axes[i][j].axis("off")
                if j < len(paths):
                    p = Path(paths[j])
                    p = p if p.is_absolute() else cache_dir / p
                    try:
                        axes[i][j].imshow(Image.open(p).convert("RGB"))
                    except OSError:
                        pass
            axes[i][0].set_title(f"{visible(c['concept'])} ({c['reward']:.2f})", fontsize=7, loc="left",
                                 parse_math=False)  # a concept's "$" is a dollar, not TeX
        fig.tight_layout()
        path = run.plots / "best_concepts.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out
