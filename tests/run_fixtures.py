"""Run directories built by hand, without running the loop: what the CLI's read-only commands
(status, rewards, eval, cache verify) and their error paths need."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from cache.db import MetaDB
from explorer.config import SANDBOX_PRESET, Config, apply_overrides
from explorer.session import RunDir


def make_run(root: Path, *overrides: str) -> RunDir:
    """A sandbox-flowers run directory with its config and an empty database."""
    run = RunDir(root)
    cfg = apply_overrides(Config(), SANDBOX_PRESET + [
        f"run.run_dir={root}", f"run.data_root={root.parent / 'data'}", "run.target=sandbox-flowers",
        *overrides])
    run.save_config(cfg)
    MetaDB(run.db_path).close()
    return run


def add_named_round(run: RunDir, name: str, round_: int = 0) -> None:
    """A finished round whose concept, query text and an outcome are `name` (untrusted text)."""
    with contextlib.closing(sqlite3.connect(run.db_path)) as con, con:  # closed: no WAL left behind
        con.execute("INSERT INTO rounds(round, status) VALUES (?, 'done')", (round_,))
        qid = con.execute(
            "INSERT INTO queries(round, concept, text, engine, status, n_results, n_kept, reward) "
            "VALUES (?, ?, ?, 'sandbox', 'done', 3, 2, 0.5)", (round_, name, name)).lastrowid
        con.execute("INSERT INTO attempts(url, query_id, caption, outcome) VALUES (?, ?, ?, ?)",
                    (f"http://127.0.0.1:9/{round_}", qid, name, name))
    run.append_round({"round": round_, "queries": 1, "fetched": 3, "kept": 2, "mean_reward": 0.5,
                      "best": [[name, 0.5]], "train": {"step": 3, "loss": 1.25}, "knn_acc": None})
