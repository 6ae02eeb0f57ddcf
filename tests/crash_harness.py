"""The crash harness: kill -9 `explore run` on the sandbox at chosen moments, resume each time,
then check that nothing was lost, doubled or asked twice (ARCHITECTURE.md, "Crash safety").
Shared by tests/test_crash.py and bench/crash.py, which says what each phase and check is.

The run is a child process, `python -m tests.crash_harness child --searches LOG --crash
PHASE:N:MS -- EXPLORE ARGS`: the explore CLI with every sandbox search logged and a kill armed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("random", "crawl", "train", "checkpoint", "index")
SMALL = ["train.steps_per_round=5", "train.batch_size=16", "crawl.queries_per_round=6",
         "crawl.results_per_query=16", "eval.progress_max_train=100", "eval.progress_max_test=100",
         "eval.probe_c=1.0", "eval.label_fractions=1.0"]


@dataclass
class CrashReport:
    kills: list[dict] = field(default_factory=list)   # {phase, landed, seconds}
    restarts: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    status: dict = field(default_factory=dict)
    max_asks: int = 0
    re_asked: int = 0                                 # asks of a text beyond its first (unfinished)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---- the child: `explore` with a search log and an armed crash -------------------------------

def child(searches: Path, crash: str, argv: list[str]) -> None:
    """Run the explore CLI in this process, logging each sandbox search and arming a crash."""
    sys.path.insert(0, str(ROOT))
    from cache.db import MetaDB
    from explorer.engines.base import search_key
    from explorer.sandbox import server

    fd = os.open(searches, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    original, put = server.Sandbox.search, MetaDB.put_search_results

    def note(event: str, query: str) -> None:  # one write to an O_APPEND file: survives a kill
        os.write(fd, (json.dumps([os.getpid(), event, query]) + "\n").encode())

    async def logged_search(self, request):
        # named as the search cache names it: a later page of a query is another search
        page = request.query.get("page", "1")
        note("asked", search_key(request.query.get("q", ""), int(page) if page.isdigit() else page))
        return await original(self, request)

    def logged_put(self, engine, query, results):
        put(self, engine, query, results)  # autocommit: stored once this returns
        note("stored", query)

    server.Sandbox.search, MetaDB.put_search_results = logged_search, logged_put
    if crash:
        phase, nth, delay_ms = crash.split(":")
        _arm(phase, int(nth), float(delay_ms) / 1000)
    sys.argv = ["explore", *argv]
    from cli import app

    app()


def _kill_group() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _arm(phase: str, nth: int, delay_s: float) -> None:
    """On the nth call of the phase's function in this process, SIGKILL the group delay_s later."""
    import inspect

    from cache.index import VectorIndex
    from explorer.crawl.crawler import Crawler
    from explorer.model.learner import Learner
    from explorer.model.train import Trainer

    owner, name = {"crawl": (Crawler, "_commit"), "train": (Learner, "train_round"),
                   "checkpoint": (Trainer, "save_checkpoint"), "index": (VectorIndex, "save")}[phase]
    original = getattr(owner, name)
    calls = [0]

    def fire() -> None:
        calls[0] += 1
        if calls[0] == nth:
            threading.Timer(delay_s, _kill_group).start()

    if inspect.iscoroutinefunction(original):
        async def wrapped(*args, **kwargs):
            fire()
            return await original(*args, **kwargs)
    else:
        def wrapped(*args, **kwargs):
            fire()
            return original(*args, **kwargs)
    setattr(owner, name, wrapped)


# ---- the parent ------------------------------------------------------------------------------

def explore_args(run_dir: Path, rounds: int, data_root: Path, first: bool) -> list[str]:
    sets = [f"--set={s}" for s in SMALL + [f"run.data_root={data_root}"]]
    if first:
        return ["run", "--target", "sandbox-flowers", "--rounds", str(rounds), "--run-dir", str(run_dir),
                "--quiet", *sets]
    return ["resume", str(run_dir), "--quiet"]


def start(run_dir: Path, searches: Path, rounds: int, data_root: Path, first: bool, crash: str,
          log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.crash_harness", "child", "--searches", str(searches),
           "--crash", crash, "--", *explore_args(run_dir, rounds, data_root, first)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_crashes(work: Path, kills: int, rounds: int, seed: int = 0, random_window_s: tuple[float, float] = (3, 25),
                timeout_s: float = 1800, phases: tuple[str, ...] = PHASES, log=print) -> CrashReport:
    """Start a run, kill it `kills` times (phases in turn), resume to the end, check everything."""
    rng = random.Random(seed)
    run_dir, data_root, searches = work / "run", work / "data", work / "searches.log"
    report = CrashReport()
    started = time.monotonic()
    deadline = started + timeout_s
    finished_early = 0
    with open(work / "explore.log", "ab") as out:
        first = True
        for i in range(kills + 1):
            last = i == kills
            phase = None if last else phases[i % len(phases)]
            crash = "" if phase in (None, "random") else f"{phase}:{rng.randint(1, 2)}:{rng.uniform(0, 40):.1f}"
            proc = start(run_dir, searches, rounds, data_root, first, crash, out)
            t0 = time.monotonic()
            if phase == "random":
                try:
                    proc.wait(timeout=rng.uniform(*random_window_s))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                report.problems.append(f"run {i} did not finish within the time limit")
                break
            first = first and not run_dir.joinpath("config.toml").exists()
            landed = rc == -signal.SIGKILL
            if not last:
                report.kills.append({"phase": phase, "landed": landed, "rc": rc,
                                     "seconds": round(time.monotonic() - t0, 1)})
                log(f"kill {i + 1}/{kills} ({phase}): {'killed' if landed else f'exited {rc}'} "
                    f"after {time.monotonic() - t0:.1f} s")
                report.restarts += 1
                if not landed and rc != 0:
                    report.problems.append(f"run {i} failed with exit status {rc} (see {work / 'explore.log'})")
                    break
                if not landed:  # exit 0: the run is done, so the kills left would not land either
                    finished_early = i + 1
                    break
            elif rc != 0:
                report.problems.append(f"the final resume exited {rc} (see {work / 'explore.log'})")
    report.seconds = time.monotonic() - started
    if not report.problems:
        report.problems += check_run(run_dir, searches, rounds, report)
    if finished_early:
        report.problems.append(f"the run was done at kill {finished_early} of {kills}, so only "
                               f"{sum(k['landed'] for k in report.kills)} landed: give it more than {rounds} rounds")
    return report


def check_run(run_dir: Path, searches: Path, rounds: int, report: CrashReport) -> list[str]:
    """The promises of ARCHITECTURE.md's "Crash safety", checked on the finished run."""
    sys.path.insert(0, str(ROOT))
    from cache.verify import verify
    from explorer.run import report as run_report
    from explorer.crawl.crawler import CHEAP_EMBEDDING
    from explorer.engines.base import search_key
    from explorer.session import RunDir

    problems = []
    run = RunDir(run_dir)
    cfg = run.load_config()
    problems += [f"verify: {p}"
                 for p in verify(run.cache_dir(cfg), run.db_path, embedding=CHEAP_EMBEDDING)]
    problems += check_searches(searches, report)
    asks = Counter(q for _, event, q in _search_log(searches) if event == "asked")
    logged = [r["round"] for r in run.read_rounds()]
    if logged != list(range(rounds)):
        problems.append(f"rounds.jsonl holds rounds {logged}, expected 0..{rounds - 1} once each")
    status = run_report.status(run)
    report.status = status
    if status["rounds_done"] != rounds or status["last_checkpoint_round"] != rounds - 1:
        problems.append(f"status says {status['rounds_done']} rounds done, checkpoint round "
                        f"{status['last_checkpoint_round']}")
    import sqlite3

    with sqlite3.connect(run.db_path) as con:
        per_round = dict(con.execute("SELECT round, COUNT(*) FROM queries GROUP BY round"))
        texts = {search_key(t, page, backend) for t, page, backend in
                 con.execute("SELECT DISTINCT text, page, backend FROM queries")}
        not_done = con.execute("SELECT COUNT(*) FROM rounds WHERE status != 'done'").fetchone()[0]
    if any(n != cfg.crawl.queries_per_round for n in per_round.values()):
        problems.append(f"queries per round {per_round}, expected {cfg.crawl.queries_per_round} each")
    if not_done:
        problems.append(f"{not_done} rounds not marked done")
    if set(asks) - texts:
        problems.append(f"searches for texts that are no query: {sorted(set(asks) - texts)[:3]}")
    problems += check_checkpoint(run, cfg, rounds)
    return problems


def _search_log(path: Path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_searches(path: Path, report: CrashReport) -> list[str]:
    """No text asked once its answer is stored; a re-ask only by a later process (after a kill)."""
    problems = []
    stored: set[str] = set()
    asked_by: dict[str, int] = {}
    asks = Counter()
    for pid, event, query in _search_log(path):
        if event == "stored":
            stored.add(query)
            continue
        asks[query] += 1
        if query in stored:
            problems.append(f"query {query!r} asked again after its answer was stored")
        elif asked_by.get(query) == pid:
            problems.append(f"query {query!r} asked twice by one process")
        asked_by[query] = pid
    report.max_asks = max(asks.values(), default=0)
    report.re_asked = sum(n - 1 for n in asks.values())
    return problems


def check_checkpoint(run, cfg, rounds: int) -> list[str]:
    """The final checkpoint loads into a Learner, which then knows every round is done."""
    from explorer.model.learner import Learner

    try:
        learner = Learner(cfg, run, [])
    except Exception as e:  # any failure to load is the finding
        return [f"final checkpoint does not load: {type(e).__name__}: {e}"]
    if learner.rounds_done != rounds:
        return [f"final checkpoint says {learner.rounds_done} rounds done, expected {rounds}"]
    return []


def main(argv: list[str] | None = None) -> int:
    """The child's entry point (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["child"])
    p.add_argument("--searches", type=Path, required=True)
    p.add_argument("--crash", default="")
    a, rest = p.parse_known_args(argv)
    child(a.searches, a.crash, rest[1:] if rest[:1] == ["--"] else rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
