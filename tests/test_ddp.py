"""The loop under torchrun (explorer/model/ddp.py): rank 0 searches, crawls, scores and writes;
both ranks train every round under DDP (gloo, 2 CPU processes, loopback only) and end each
round with the same weights; a resume works the same; the run is the same in kind as one
process's."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.model import ddp
from explorer.model.data import MixedBatchSampler

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["crawl.queries_per_round=4", "crawl.results_per_query=8", "train.steps_per_round=3",
         "train.batch_size=8", "eval.progress_max_train=60", "eval.progress_max_test=40"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explore(args: list[str], cwd: Path, ranks: int, timeout: float = 400) -> subprocess.CompletedProcess:
    """`python -m explorer ARGS`, under torchrun with `ranks` processes where ranks > 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
                   "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    return subprocess.run([*launch, "-m", "explorer", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_args(tmp_path: Path, name: str, rounds: int) -> list[str]:
    args = ["run", "--target", "sandbox-flowers", "--engine", "sandbox", "--rounds", str(rounds),
            "--hours", "1", "--run-dir", str(tmp_path / name), "--data-root", str(tmp_path / "data"),
            "--quiet"]
    return args + [a for s in SMALL for a in ("--set", s)]


def files_of(run: Path) -> set[str]:
    """The run directory's files, images and numbered or per-start files left out."""
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()
            and p.relative_to(run).parts[0] not in ("cache", "features", "tb")}


# ---- quick: the pieces -------------------------------------------------------------------
def test_ranks_take_disjoint_shares_that_make_up_the_one_process_batch():
    sizes, shares = [10, 7, 5], [0.5, 0.3, 0.2]
    one = iter(MixedBatchSampler(sizes, shares, batch_size=8, seed=3))
    r0 = iter(MixedBatchSampler(sizes, shares, batch_size=8, seed=3, rank=0, world=2))
    r1 = iter(MixedBatchSampler(sizes, shares, batch_size=8, seed=3, rank=1, world=2))
    for _ in range(5):
        whole, a, b = next(one), next(r0), next(r1)
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert sorted(a + b) == sorted(whole)
        # every source in each share: target (0-9) and candidates (10-16) on both ranks
        assert any(i < 10 for i in a) and any(i < 10 for i in b)
        assert any(10 <= i < 17 for i in a) and any(10 <= i < 17 for i in b)


def test_without_torchruns_environment_there_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ddp.start() is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")   # torchrun --nproc_per_node 1: as today
    assert ddp.start() is None
    assert not torch.distributed.is_initialized()


def test_follower_seeds_and_weight_digests():
    assert ddp.rank_seed(0, 3, 1) == ddp.rank_seed(0, 3, 1) != ddp.rank_seed(0, 3, 2)
    assert ddp.rank_seed(0, 3, 1) != ddp.rank_seed(0, 4, 1)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert ddp.weights_digest(a.state_dict()) == ddp.weights_digest(b.state_dict())
    with torch.no_grad():
        b.bias[0] += 1e-7
    assert ddp.weights_digest(a.state_dict()) != ddp.weights_digest(b.state_dict())


def test_rank_0_failing_before_its_first_round_stops_the_other_rank(tmp_path):
    """An error on rank 0 (here the target is missing) ends every rank at once: rank 0 sends
    the stop and the follower returns by itself. The ranks are started by hand, without
    torchrun's agent (which would end the follower anyway); past the group's timeout (60 s
    here) a follower left waiting would fail instead."""
    (tmp_path / "cwd").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(ROOT), "COLUMNS": "200", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "EXPLORE_DDP_TIMEOUT_S": "60"}
    args = [sys.executable, "-m", "explorer", "run", "--target", f"folder:{tmp_path / 'missing'}",
            "--engine", "none", "--model", "tiny-64", "--run-dir", str(tmp_path / "run"), "--quiet"]
    procs = [subprocess.Popen(args, cwd=tmp_path / "cwd", env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 1 and "error: folder:" in outs[0] and "no such folder" in outs[0], outs[0][-3000:]
    assert procs[1].returncode == 0 and outs[1].strip() == "", outs[1][-3000:]
    assert list((tmp_path / "cwd").iterdir()) == []


# ---- slow: whole runs ----------------------------------------------------------------------
@pytest.mark.slow
def test_two_ranks_run_resume_and_match_one_process_in_kind(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    two = tmp_path / "two"
    proc = explore(run_args(tmp_path, "two", rounds=2), cwd, ranks=2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    rounds = [json.loads(line) for line in (two / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:   # one model: every rank ends the round with the same weights
        assert r["train"]["ranks"] == 2 and len(set(r["train"]["weights"])) == 1
        assert r["train"]["steps"] == 3 and math.isfinite(r["train"]["loss"]) and r["kept"] > 0
    assert rounds[0]["train"]["weights"] != rounds[1]["train"]["weights"]   # and it trained
    ck = torch.load(two / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 6 and json.loads(ck["extra"]["explore"]["report"])["round"] == 1

    # resumed the same way, to a third round: it continues from rank 0's checkpoint on both
    proc = explore(["resume", str(two), "--quiet", "--set", "run.rounds=3"], cwd, ranks=2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rounds = [json.loads(line) for line in (two / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    last = rounds[2]["train"]
    assert last["step"] == 9 and last["ranks"] == 2 and len(set(last["weights"])) == 1
    ck = torch.load(two / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 9
    assert ddp.weights_digest(ck["model"]) == last["weights"][0]   # the checkpoint's model

    # one process, same settings: the same rounds and files, losses of the same size
    one = tmp_path / "one"
    proc = explore(run_args(tmp_path, "one", rounds=2), cwd, ranks=1)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    single = [json.loads(line) for line in (one / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in single] == [0, 1]
    assert "ranks" not in single[0]["train"] and "weights" not in single[0]["train"]
    for a, b in zip(single, rounds):
        assert set(b["train"]) - set(a["train"]) == {"ranks", "weights"}
        assert a["train"]["lr"] == pytest.approx(b["train"]["lr"])   # same batch, same lr
        for key in ("loss", "pixel_loss", "caption_loss"):
            assert b["train"][key] == pytest.approx(a["train"][key], rel=0.25), key
        assert a["queries"] == b["queries"] and a["kept"] > 0
    assert files_of(two) == files_of(one)   # rank 1 wrote nothing of its own
    tb = list((two / "tb").glob("events.out.tfevents.*")) if (two / "tb").exists() else []
    assert len(tb) in (0, 2)                # one per start of rank 0, none from rank 1
    assert list(cwd.iterdir()) == []
    assert np.isfinite([r["train"]["loss"] for r in rounds]).all()
