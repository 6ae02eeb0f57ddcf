"""kill -9 of `explore run` on the sandbox, resumed each time (ARCHITECTURE.md, "Crash safety").

Four kills, one inside each of the crawl's commit, the FAISS index write, a round's training
and the checkpoint write (tests/crash_harness.py arms a SIGKILL of the whole process group a few
milliseconds into that step; kills at random wall-clock moments are in the bench, which costs
a restart each). Afterwards the cache verifies clean, every round is logged once and the final
checkpoint loads. "No query asked twice" means: no query whose
answer was stored is asked again (a search in flight when the kill lands is asked again by the
next process, and only then). The 20-kill version is `python bench/crash.py --kills 20`.
"""
import pytest

from tests.crash_harness import run_crashes


@pytest.mark.slow
def test_kill_nine_in_every_phase_then_resume(tmp_path):
    report = run_crashes(tmp_path, kills=4, rounds=3, seed=1, timeout_s=500,
                         phases=("crawl", "index", "train", "checkpoint"), log=lambda line: None)
    assert report.ok, report.problems
    landed = {k["phase"] for k in report.kills if k["landed"]}
    assert landed == {"crawl", "index", "train", "checkpoint"}, report.kills
