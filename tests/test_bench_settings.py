"""The benchmarks' arms and ablation variants are config overrides: each must be a valid
setting that changes what it says it changes (a misspelt key or a value the config refuses
would turn a variant into a silent copy of the baseline, or a crash an hour in)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from explorer.config import SANDBOX_PRESET, Config, apply_overrides, get_field

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


ablate = bench_module("ablate")
e2e = bench_module("e2e")


class Args:
    rounds, steps = 10, 120


@pytest.mark.parametrize("name", sorted(ablate.VARIANTS))
def test_every_ablation_variant_is_a_valid_change_of_the_explore_arm(name):
    base = apply_overrides(Config(), SANDBOX_PRESET + e2e.ARMS["explore"])
    overrides = ablate.overrides(name, Args)
    varied = apply_overrides(Config(), SANDBOX_PRESET + e2e.ARMS["explore"] + overrides)
    if name == "base":
        assert overrides == [] and varied == base
        return
    keys = [o.partition("=")[0] for o in overrides]
    changed = [k for k in keys if get_field(varied, k) != get_field(base, k)]  # AttributeError: no such key
    assert changed, f"{name} changes nothing"   # it changes something the loop reads


def test_the_schedule_variant_ends_the_cosine_with_the_runs_steps():
    (override,) = ablate.overrides("cosine-ends", Args)
    assert override == "train.total_steps=1200"


def test_batch_share_variants_sum_to_one():
    for name in ("target-heavy", "web-heavy", "no-replay"):
        t = apply_overrides(Config(), SANDBOX_PRESET + ablate.overrides(name, Args)).train
        assert t.target_share + t.candidate_share + t.replay_share == pytest.approx(1.0), name


def test_an_e2e_log_keeps_runs_with_overrides_apart_from_plain_runs(tmp_path):
    log = tmp_path / "e2e.jsonl"
    plain = {"target": "sandbox-flowers", "rounds": 10, "steps": 120}
    lines = [{**plain, "seed": 0, "arm": "random", "result": "plain"},
             {**plain, "sets": ["model.caption_weight=3"], "seed": 0, "arm": "random", "result": "x3"},
             {**plain, "sets": ["model.caption_weight=2"], "seed": 1, "arm": "random", "result": "x2"}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{cut short")
    assert e2e.read_log(log, plain) == {(0, "random"): "plain"}
    assert e2e.read_log(log, {**plain, "sets": ["model.caption_weight=3"]}) == {(0, "random"): "x3"}
    assert e2e.read_log(log, {**plain, "steps": 240}) == {}


def test_bench_logs_tell_runs_under_other_defaults_apart(tmp_path, monkeypatch):
    runs = sys.modules[e2e.defaults_fingerprint.__module__]
    today = runs.defaults_fingerprint()
    assert runs.defaults_fingerprint() == today   # the same defaults, the same mark
    monkeypatch.setattr(runs, "SANDBOX_PRESET", SANDBOX_PRESET + ["model.caption_weight=1"])
    older = runs.defaults_fingerprint()
    assert older != today
    log = tmp_path / "e2e.jsonl"
    plain = {"target": "sandbox-flowers", "rounds": 10, "steps": 120}
    log.write_text("\n".join(json.dumps(x) for x in [
        {**plain, "seed": 0, "arm": "random", "result": "before"},                      # logged before the mark
        {**plain, "defaults": older, "seed": 0, "arm": "explore", "result": "older"},
        {**plain, "defaults": today, "seed": 0, "arm": "oracle", "result": "today"}]) + "\n")
    assert e2e.read_log(log, {**plain, "defaults": today}) == {(0, "oracle"): "today"}
