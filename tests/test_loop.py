"""The explore loop end to end on the sandbox web, in-process and small."""
import json
import shutil
import sqlite3

import pytest
import torch

from explorer.run.assemble import _drive, build, sandbox_for
from explorer.config import SANDBOX_PRESET, Config, apply_overrides
from explorer.engines.base import Engine, SearchOutcome
from explorer.session import RunDir

SMALL = [
    "crawl.queries_per_round=4", "crawl.results_per_query=8", "train.steps_per_round=3",
    "train.batch_size=8", "eval.progress_max_train=60", "eval.progress_max_test=40",
]


def small_config(tmp_path, rounds: int, *extra: str) -> tuple[RunDir, Config]:
    run = RunDir(tmp_path / "run")
    cfg = apply_overrides(Config(), SANDBOX_PRESET + SMALL + [
        f"run.run_dir={run.root}", f"run.rounds={rounds}", "run.hours=1",
        f"run.data_root={tmp_path / 'data'}", "run.target=sandbox-flowers", *extra])
    run.save_config(cfg)
    return run, cfg


def run_rounds(run: RunDir, cfg: Config, engine=None, prepare=None):
    """Build and drive the loop like `explore run`; returns (explorer, learner step).
    `prepare(explorer)` runs before the loop starts."""
    with sandbox_for(cfg) as sandbox:
        explorer, parts = build(run, cfg, sandbox, console=_Quiet(), quiet=True)
        if engine is not None:
            explorer.engine = engine
        if prepare is not None:
            prepare(explorer)
        try:
            _drive(explorer)
            return explorer, parts.learner.trainer.step
        finally:
            parts.close()


class _Quiet:
    def print(self, *a, **k):
        pass


def db_rows(run: RunDir, sql: str):
    with sqlite3.connect(run.db_path) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("loop")
    run, cfg = small_config(tmp_path, 2, "reward.refresh_every=1")
    seen = {"obs": [], "background": []}   # at each sample: rewards learned, reward centre's sample

    def spy(explorer):
        sample = explorer.policy.sample

        def counted(n):
            seen["obs"].append(len(explorer.policy.obs_concept))
            seen["background"].append(explorer.background_paths())
            return sample(n)
        explorer.policy.sample = counted

    _, step = run_rounds(run, cfg, prepare=spy)
    return run, cfg, step, seen


def test_each_round_is_chosen_knowing_every_earlier_rounds_rewards(finished_run):
    run, cfg, _, seen = finished_run
    assert seen["obs"] == [0, 4]   # round 1 is sampled after round 0's 4 queries are scored
    # the rewards' centre comes from a fixed web sample: the images kept in the first round
    assert seen["background"][0] == []
    first_round = {str(run.cache_dir(cfg) / p) for (p,) in db_rows(run, "SELECT path FROM images WHERE round=0")}
    assert seen["background"][1] and set(seen["background"][1]) == first_round


def test_round_one_refreshes_round_zero_and_the_policy_and_report_use_it(finished_run):
    """reward.refresh_every=1: round 1 re-scores round 0's images with its encoder (trained
    since); the checkpointed policy and `explore rewards` hold the fresh values."""
    from explorer.run import report
    run, *_ = finished_run
    fresh = db_rows(run, "SELECT concept, round, reward, fresh_reward, fresh_round FROM queries ORDER BY id")
    assert {(r, fr) for _, r, _, _, fr in fresh} == {(0, 1), (1, None)}
    assert any(f != pytest.approx(o) for _, r, o, f, _ in fresh if r == 0)   # the encoder moved
    refreshed = db_rows(run, "SELECT COUNT(*) FROM images WHERE round=0 AND fresh_round=1")[0][0]
    assert refreshed == db_rows(run, "SELECT COUNT(*) FROM images WHERE round=0")[0][0] > 0

    ck = torch.load(run.latest_checkpoint, map_location="cpu", weights_only=True)
    policy = json.loads(ck["extra"]["explore"]["policy"])
    now = {(c, r): f if f is not None else o for c, r, o, f, _ in fresh}
    observed = [(r, w) for r, w in zip(policy["obs_round"], policy["obs_reward"])]
    assert sorted(w for r, w in observed if r == 0) == pytest.approx(
        sorted(v for (c, r), v in now.items() if r == 0))
    by_concept = {c["concept"]: c for c in report.concept_rewards(run)}
    for (concept, round_), value in now.items():
        if round_ == 0 and concept not in {c for c, r in now if r == 1}:
            assert by_concept[concept]["reward"] == pytest.approx(value)
            assert by_concept[concept]["scored_round"] == 1


def test_rounds_then_resume_continue_without_asking_again(finished_run):
    run, cfg, step, _ = finished_run
    assert step == 2 * 3
    rounds = run.read_rounds()
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["kept"] > 0 for r in rounds)
    queries = db_rows(run, "SELECT round, concept, text, status, reward FROM queries")
    assert len(queries) == 8 and all(q[3] == "done" and q[4] is not None for q in queries)
    # every attempt has one outcome; every kept image has a file and a reward
    images = db_rows(run, "SELECT path, reward FROM images")
    assert images and all(r is not None for _, r in images)
    assert all((run.cache_dir(cfg) / p).exists() for p, _ in images)
    assert run.latest_checkpoint.exists()

    # the same run, two more rounds: the step and the round number continue
    cfg = apply_overrides(run.load_config(), ["run.rounds=4"])
    run.save_config(cfg)
    urls_before = {u for (u,) in db_rows(run, "SELECT url FROM attempts")}
    _, step = run_rounds(run, cfg)
    assert step == 4 * 3
    assert [r["round"] for r in run.read_rounds()] == [0, 1, 2, 3]
    asked = db_rows(run, "SELECT text, page, backend FROM queries")
    assert len(asked) == 16 and len(set(asked)) == 16, "a query was asked twice"
    # nothing fetched twice: an URL appears in more than one attempt row only for another query
    dup = db_rows(run, "SELECT url, query_id, COUNT(*) FROM attempts GROUP BY url, query_id HAVING COUNT(*) > 1")
    assert dup == []
    assert urls_before <= {u for (u,) in db_rows(run, "SELECT url FROM attempts")}
    ck = torch.load(run.latest_checkpoint, map_location="cpu", weights_only=True)
    assert ck["step"] == 12 and json.loads(ck["extra"]["explore"]["policy"])


class DyingEngine(Engine):
    """`engine` for its first `alive` searches, then an engine that is down."""

    def __init__(self, engine, alive: int):
        self.engine, self.alive, self.calls = engine, alive, 0
        self.name = engine.name

    async def search(self, query: str, max_results: int, page: int = 1, backend: str = "") -> SearchOutcome:
        self.calls += 1
        if self.calls <= self.alive:
            return await self.engine.search(query, max_results, page, backend)
        return SearchOutcome([], error="HTTP 503 after 5 tries", retryable=True, attempts=5)

    async def aclose(self) -> None:
        await self.engine.aclose()


def test_a_dead_engine_pauses_crawling_not_training_then_stops_resumable(tmp_path):
    from explorer.run import report
    from explorer.errors import SearchUnavailable

    run, cfg = small_config(tmp_path, 6, "crawl.search_pause_s=0.2", "crawl.search_patience_s=0.3")
    dying = {}

    def kill_after_round_0(explorer):
        dying["engine"] = explorer.engine = DyingEngine(explorer.engine, alive=4)
    with pytest.raises(SearchUnavailable):
        run_rounds(run, cfg, prepare=kill_after_round_0)
    done = [r["round"] for r in run.read_rounds()]
    assert done[0] == 0 and run.read_rounds()[0]["kept"] > 0 and len(done) < 6
    assert all(r["kept"] == 0 for r in run.read_rounds()[1:]), "training went on while paused"
    failed = db_rows(run, "SELECT reward, error FROM queries WHERE status IN ('failed', 'retry')")
    assert failed and all(r is None and "503" in e for r, e in failed), "no floor for a failure"
    assert db_rows(run, "SELECT COUNT(*) FROM events WHERE kind='search_paused'")[0][0] >= 1
    info = report.status(run)
    assert info["queries_pending_retry"] > 0 and info["failed_queries"] == len(failed)
    waiting = {c for (c,) in db_rows(run, "SELECT concept FROM queries WHERE status IN ('retry', 'pending')")}

    # the engine is back: the resumed run asks every waiting concept, and scores it
    cfg = apply_overrides(run.load_config(), [f"run.rounds={len(done) + 2}"])
    run.save_config(cfg)
    run_rounds(run, cfg)
    rewarded = {c for (c,) in db_rows(run, "SELECT concept FROM queries WHERE reward IS NOT NULL")}
    assert waiting <= rewarded
    assert db_rows(run, "SELECT COUNT(*) FROM queries WHERE status='pending'")[0][0] == 0


def test_a_throttled_concept_keeps_no_reward_and_is_asked_again(tmp_path):
    """sandbox.profile=throttled: the first window of searches answers 429 or an empty 202 to
    every try of round 0's four queries; they get no reward and no observation, and round 1
    asks them again, in the open window."""
    run, cfg = small_config(tmp_path, 2, "sandbox.profile=throttled", "crawl.search_retries=5")
    obs_at_sample = []

    def spy(explorer):
        sample = explorer.policy.sample

        def counted(n):
            obs_at_sample.append(len(explorer.policy.obs_concept))
            return sample(n)
        explorer.policy.sample = counted

    explorer, step = run_rounds(run, cfg, prepare=spy)
    rows = db_rows(run, "SELECT round, concept, text, status, reward, error FROM queries ORDER BY id")
    first = [r for r in rows if r[0] == 0]
    second = [r for r in rows if r[0] == 1]
    assert len(first) == 4 and all(r[3] == "failed" and r[4] is None and "rate limited" in r[5]
                                   for r in first)
    assert sorted(r[2] for r in second) == sorted(r[2] for r in first), "asked again"
    assert all(r[3] == "done" and r[4] is not None for r in second)
    assert obs_at_sample == [0, 0], "a throttled search is no observation"
    assert len(explorer.policy.obs_concept) == 4
    assert [r["failed_queries"] for r in run.read_rounds()] == [4, 0]
    assert step == 2 * 3


def test_a_down_engine_stops_the_run_within_its_patience_in_one_line(tmp_path):
    """`explore run ... --set sandbox.profile=down`: exit 3, one error line, config and
    database left for `explore resume`."""
    import time

    from typer.testing import CliRunner

    from cli import app

    run = RunDir(tmp_path / "run")
    patience = 2.0
    sets = SMALL + [f"run.data_root={tmp_path / 'data'}", "sandbox.profile=down",
                    f"crawl.search_patience_s={patience}", "crawl.search_pause_s=0.2",
                    # down within round 0: searches past the streak wait, and are not re-rounded
                    "crawl.queries_per_round=16", "crawl.search_fail_streak=2"]
    started = time.monotonic()
    out = CliRunner().invoke(app, ["run", "--target", "sandbox-flowers", "--engine", "sandbox",
                                   "--run-dir", str(run.root), "--quiet",
                                   *[a for s in sets for a in ("--set", s)]])
    took = time.monotonic() - started
    assert out.exit_code == 3, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unavailable" in errors[0] and "explore resume" in errors[0]
    assert "Traceback" not in out.output and "Best concepts" not in out.output
    down = db_rows(run, "SELECT message FROM events WHERE kind='search_unavailable'")
    assert len(down) == 1 and patience <= json.loads(down[0][0])["down_s"] < patience + 5
    assert took < 120   # start-up (target, vocabulary, model) and the patience, nothing more
    assert run.load_config().sandbox.profile == "down"
    assert run.read_rounds() == []
    statuses = {s for (s,) in db_rows(run, "SELECT status FROM queries")}
    assert "retry" in statuses and statuses <= {"pending", "retry"}
    assert db_rows(run, "SELECT COUNT(*) FROM queries WHERE reward IS NOT NULL") == [(0,)]


def test_status_rewards_and_eval_read_the_run(finished_run):
    from typer.testing import CliRunner

    from cli import app

    run, cfg, *_ = finished_run
    cli = CliRunner()
    status = cli.invoke(app, ["status", str(run.root), "--json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    for key in ("rounds_done", "queries", "images_kept", "outcomes", "train_steps",
                "budget_used_s", "last_checkpoint_round"):
        assert key in info
    n_images = db_rows(run, "SELECT COUNT(*) FROM images")[0][0]
    assert info["images_kept"] == n_images and info["rounds_done"] == len(run.read_rounds())
    assert sum(info["outcomes"].values()) == db_rows(run, "SELECT COUNT(*) FROM attempts")[0][0]
    assert info["train_steps"] == 3 * info["rounds_done"]
    rewarded = db_rows(run, "SELECT COUNT(*) FROM queries WHERE reward IS NOT NULL")[0][0]
    assert info["queries_awaiting_reward"] == info["queries"] - rewarded

    exported = cli.invoke(app, ["rewards", str(run.root), "--format", "json"])
    assert exported.exit_code == 0
    data = json.loads(exported.stdout)
    assert len(data["queries"]) == info["queries"] and len(data["rounds"]) == info["rounds_done"]
    csv_out = cli.invoke(app, ["rewards", str(run.root), "--format", "csv"])
    assert csv_out.stdout.splitlines()[0].startswith("id,round,concept")
    table = cli.invoke(app, ["rewards", str(run.root), "--plot"])
    assert table.exit_code == 0, table.output
    assert (run.plots / "rewards.png").stat().st_size > 1000
    assert (run.plots / "best_concepts.png").stat().st_size > 1000

    ev = cli.invoke(app, ["eval", str(run.root), "--json", "--protocol", "knn", "--label-fraction", "0.5"])
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    assert 0.0 <= result["knn"]["0.5"] <= 1.0 and "linear" not in result

    # INTERN's claim: this run at 10% of labels beside a baseline run at 100% (here itself)
    ev = cli.invoke(app, ["eval", str(run.root), "--json", "--protocol", "linear", "--baseline", str(run.root)])
    assert ev.exit_code == 0, ev.output
    result = json.loads(ev.stdout)
    claim = result["intern_claim"]
    assert claim["linear_10"] == result["linear"]["0.1"]
    assert claim["baseline_linear_100"] == result["baseline"]["linear"]["1.0"] == result["linear"]["1.0"]
    assert claim["gap"] == pytest.approx(claim["linear_10"] - claim["baseline_linear_100"])
    text = cli.invoke(app, ["eval", str(run.root), "--protocol", "linear", "--baseline", str(run.root)])
    assert "INTERN" in text.stdout and ("met," in text.stdout or "not met" in text.stdout)
    one = cli.invoke(app, ["eval", str(run.root), "--protocol", "knn", "--baseline", str(run.root)])
    assert one.exit_code != 0 and "--label-fraction 0.1" in one.output   # nothing to compare: one line


def test_status_tells_queries_crawled_ahead_from_rewarded_ones(finished_run, tmp_path):
    """A run stopped while the next round's queries were crawled (during the last training) has
    queries that no round rewarded yet: status counts them apart, not only in `queries`."""
    from explorer.run import report
    run, *_ = finished_run
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    before = report.status(copy)
    last = max(r["round"] for r in copy.read_rounds())
    with sqlite3.connect(copy.db_path) as con:
        con.executemany("INSERT INTO queries(round, concept, text, engine, status, n_results, n_kept, created_at) "
                        "VALUES (?, 'rose', 'rose photo', 'sandbox', 'done', 24, 20, 0)", [(last + 1,)] * 3)
    after = report.status(copy)
    assert after["queries"] == before["queries"] + 3
    assert after["queries_awaiting_reward"] == before["queries_awaiting_reward"] + 3
    assert after["rounds_done"] == before["rounds_done"]


def test_a_round_checkpointed_but_not_logged_is_logged_on_resume(finished_run):
    """What a kill between the checkpoint's rename and the log lines leaves."""
    run, cfg, *_ = finished_run
    lines = run.rounds_log.read_text().splitlines()
    last = json.loads(lines[-1])
    run.rounds_log.write_text("\n".join(lines[:-1]) + "\n")
    cfg = run.load_config()                      # the run is complete: nothing more to train
    _, step = run_rounds(run, cfg)
    assert [r["round"] for r in run.read_rounds()] == [r["round"] for r in map(json.loads, lines)]
    assert run.read_rounds()[-1] == last
    assert step == last["train"]["step"]


def test_cli_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    cli = CliRunner()
    out = cli.invoke(app, ["status", str(tmp_path / "nope")])
    assert out.exit_code == 1 and "not a run directory" in out.output and "Traceback" not in out.output
    out = cli.invoke(app, ["run", "--target", "sandbox-flowers", "--run-dir", str(tmp_path / "r"),
                           "--set", "train.nope=1"])
    assert out.exit_code == 1 and "unknown config field train.nope" in out.output


def _start(args, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen([sys.executable, str(root / "cli.py"), *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(predicate, deadline_s: float) -> bool:
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_ctrl_c_stops_after_a_checkpoint_and_the_run_resumes(tmp_path):
    import signal

    run = RunDir(tmp_path / "run")
    args = ["run", "--target", "sandbox-flowers", "--rounds", "3", "--run-dir", str(run.root),
            "--quiet", *[a for s in SMALL + [f"run.data_root={tmp_path / 'data'}"] for a in ("--set", s)]]
    proc = _start(args, tmp_path)
    try:
        assert _wait_for(lambda: run.rounds_log.exists() or proc.poll() is not None, 300)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "stopping after this round" in out and "explore resume" in out
    done = [r["round"] for r in run.read_rounds()]
    assert done and done == list(range(len(done))) and len(done) < 3
    ck = torch.load(run.latest_checkpoint, map_location="cpu", weights_only=True)
    assert ck["extra"]["explore"]["round"] == done[-1]

    resumed = _start(["resume", str(run.root), "--quiet"], tmp_path)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert [r["round"] for r in run.read_rounds()] == [0, 1, 2]
    asked = db_rows(run, "SELECT text, page, backend FROM queries")
    assert len(asked) == len(set(asked)) == 3 * 4


def test_an_unlabelled_folder_target_explores_without_evaluation(tmp_path):
    """folder:PATH of loose images: no test split, so no leak filter and no k-NN, but the
    round runs (crawl, MUG, rewards against the folder's images)."""
    from PIL import Image

    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (72, 72), (20 * i, 200 - 10 * i, 90)).save(folder / f"{i}.png")
    run, cfg = small_config(tmp_path, 1, f"run.target=folder:{folder}", "crawl.engine=sandbox")
    _, step = run_rounds(run, cfg)
    assert step == 3
    (record,) = run.read_rounds()
    assert record["kept"] > 0 and record["knn_acc"] is None


@pytest.mark.parametrize("named, share, says", [(True, 1.0, "the first round"),
                                                (True, 0.5, "50% of the first round"),
                                                (True, 0.0, None), (False, 1.0, None)])
def test_a_run_draws_its_first_round_near_the_targets_class_names(tmp_path, named, share, says):
    run, cfg = small_config(tmp_path, 1, f"policy.class_names={str(named).lower()}",
                            f"policy.class_names_share={share}")
    named = says is not None
    said = []
    console = type("Recording", (), {"print": lambda self, *a, **k: said.extend(map(str, a))})()
    with sandbox_for(cfg) as sandbox:
        explorer, parts = build(run, cfg, sandbox, console=console, quiet=True)
        try:
            policy, world = explorer.policy, sandbox.world
            told = [line for line in said if "class names" in line]
            if not named:
                assert policy.prior is None and not told
                return
            assert told and "10 class names (dahlia" in told[0]   # the run says what guides its first round
            assert told[0].startswith(says + "'s concepts are drawn near"), told[0]
            top = [policy.concepts[i] for i in policy.prior.argsort()[::-1][:40]]
            family = world.target_family(cfg.run.target)
            assert all(world.family_of(c) == family for c in top), top
        finally:
            parts.close()
