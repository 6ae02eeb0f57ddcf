"""What fresh rewards cost: a sandbox run on the CPU config with a refresh every round, printing
per round the refresh's seconds and images re-embedded beside the round's own seconds.

    python bench/refresh.py --rounds 6 [--every 1] [--set section.field=value ...]

The figures come from the run's `rewards_refreshed` events and rounds.jsonl; the refresh set
grows with the queries scored so far (up to reward.refresh_per_query images each) plus the
replay pool (train.replay_size).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

from sandbox_runs import run_sandbox


def refresh_costs(run) -> dict[int, dict]:
    """{round: {"seconds", "images", "queries"}} of the run's refreshes."""
    with sqlite3.connect(run.db_path) as con:
        events = [json.loads(m) for (m,) in con.execute(
            "SELECT message FROM events WHERE kind='rewards_refreshed' ORDER BY id")]
    return {e["round"]: e for e in events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--every", type=int, default=1, help="reward.refresh_every")
    ap.add_argument("--target", default="sandbox-flowers")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, _ = run_sandbox(Path(tmp) / "run", [
            f"run.target={args.target}", f"run.rounds={args.rounds}", "run.hours=1",
            f"run.data_root={Path(tmp) / 'data'}", f"reward.refresh_every={args.every}",
            *args.overrides])
        costs = refresh_costs(run)
        rounds = run.read_rounds()
    print(f"{'round':>5} {'round s':>8} {'refresh s':>9} {'images':>7} {'queries':>7} {'img/s':>7}")
    for r in rounds:
        c = costs.get(r["round"])
        if c is None:
            print(f"{r['round']:>5} {r['seconds']:>8.1f} {'-':>9} {'-':>7} {'-':>7} {'-':>7}")
            continue
        rate = c["images"] / c["seconds"] if c["seconds"] else float("nan")
        print(f"{r['round']:>5} {r['seconds']:>8.1f} {c['seconds']:>9.2f} {c['images']:>7} "
              f"{c['queries']:>7} {rate:>7.0f}")
    if costs:
        total = sum(c["seconds"] for c in costs.values())
        share = total / sum(r["seconds"] for r in rounds)
        print(f"refreshes: {len(costs)}, {total:.1f} s in all, {100 * share:.1f}% of the rounds' time")


if __name__ == "__main__":
    main()
