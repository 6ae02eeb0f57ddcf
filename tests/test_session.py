import multiprocessing as mp

import pytest

from explorer.session import Budget, RunDir, RunLocked


def test_budget_counts_across_resumes(tmp_path):
    now = [100.0]
    run = RunDir(tmp_path)
    b = Budget(run, hours=1.0, clock=lambda: now[0])
    now[0] += 1200
    b.tick()
    assert b.spent_s == pytest.approx(1200)
    # a new process: time before the last tick is carried over, the new clock starts at zero
    now[0] = 5.0
    b2 = Budget(run, hours=1.0, clock=lambda: now[0])
    now[0] += 600
    assert b2.spent_s == pytest.approx(1800)
    assert b2.left_s == pytest.approx(1800)
    now[0] += 1800
    assert b2.exhausted()


def test_rounds_log_skips_a_line_cut_by_a_crash(tmp_path):
    run = RunDir(tmp_path)
    run.append_round({"round": 0, "kept": 3})
    with open(run.rounds_log, "a") as f:
        f.write('{"round": 1, "ke')          # what a kill mid-write could leave
    run.append_round({"round": 1, "kept": 5})
    assert [r["round"] for r in run.read_rounds()] == [0, 1]


def _hold_lock(path, ready, release):
    with RunDir(path).lock():
        ready.set()
        release.wait(10)


def test_one_process_per_run_dir(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    p.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunLocked):
            with RunDir(tmp_path).lock():
                pass
    finally:
        release.set()
        p.join(10)
    with RunDir(tmp_path).lock():   # free again once the holder is gone
        pass


def test_a_run_has_begun_once_its_first_round_has(tmp_path):
    """What pins a run's config: a round in the database or the rounds log, or a checkpoint."""
    from cache.db import MetaDB

    def fresh(name):
        return RunDir(tmp_path / name)

    assert not fresh("empty").began()
    run = fresh("db")
    run.root.mkdir()
    MetaDB(run.db_path).close()                  # a first run that failed after opening its cache
    assert not run.began()
    with MetaDB(run.db_path) as db:
        db.start_round(0)
    assert run.began()

    run = fresh("log")
    run.root.mkdir()
    run.append_round({"round": 0, "kept": 1})
    assert run.began()

    run = fresh("ckpt")
    run.checkpoints.mkdir(parents=True)
    run.latest_checkpoint.write_bytes(b"weights")
    assert run.began()


def test_a_locked_run_is_the_users_to_fix():
    from explorer.errors import UserError

    assert issubclass(RunLocked, UserError)       # one line on the terminal, never a traceback
