"""What `explore run` tells before it runs and `explore status` after: --help's defaults (the
config's) and accepted values (the config's rules), --quiet without any progress bar, and the
run's throughput and time left."""
import json

import pytest
from typer.testing import CliRunner

from cli import app
from explorer.config import PRETRAINED_INIT, RULES, SANDBOX_PRESET, Config, apply_overrides, preset_values, shown
from explorer.run import report
from tests.run_fixtures import add_named_round, make_run

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def run_help() -> str:
    result = runner.invoke(app, ["run", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())      # one space between words, however it wrapped


@pytest.mark.parametrize("name", ["run.hours", "crawl.engine", "model.name", "policy.vocab", "policy.name",
                                  "run.preset", "run.rounds", "run.target"])
def test_run_help_shows_each_default_as_the_config_has_it(name):
    default, sandbox = shown(Config(), name), preset_values(SANDBOX_PRESET).get(name)
    said = default if sandbox in (None, default) else f"{default}, sandbox-* targets {sandbox}"
    assert f"Default: {said} ({name})." in run_help()


def test_run_help_shows_every_accepted_value_and_the_init_a_real_target_gets():
    out = run_help()
    for name in ("model.name", "policy.name", "run.preset"):
        assert ", ".join(RULES[name].options) in out
    for name in ("crawl.engine", "policy.vocab", "model.init"):
        assert RULES[name].says in out
    assert PRETRAINED_INIT[Config().model.name] in out and "(model.init)" in out
    assert "train.batch_size=32" in out and f"train.batch_size={Config().train.batch_size}" in out


def _build_then_stop(monkeypatch):
    """The run builds every part (the concept embeddings among them), then stops before round 0."""
    from explorer.errors import UserError
    from explorer.run import assemble

    def stop(explorer):
        raise UserError("stopped by the test after build")

    monkeypatch.setattr(assemble, "_drive", stop)


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_draws_no_progress_bar_not_even_the_concept_embeddings_one(tmp_path, monkeypatch, quiet):
    _build_then_stop(monkeypatch)
    result = runner.invoke(app, ["run", "--target", "sandbox-flowers", "--run-dir", str(tmp_path / "run"),
                                 "--data-root", str(tmp_path / "data"), *(["--quiet"] if quiet else []),
                                 "--set", f"policy.embedding_cache={tmp_path / 'concepts'}"], env=WIDE)
    assert "stopped by the test after build" in result.output, result.output
    bars = [ln for ln in result.output.splitlines() if "━" in ln or ln.startswith("embedding")]
    if quiet:
        assert bars == []
    else:   # the bar a quiet run leaves out (the embeddings are computed: the cache is new)
        assert any("embedding" in ln for ln in bars), result.output
    assert any(ln.startswith("on cpu a round of tiny-64 takes about") for ln in result.output.splitlines())


def test_quiet_turns_the_libraries_bars_off_and_back():
    hub = pytest.importorskip("huggingface_hub.utils")
    from explorer.run.progress import library_bars

    assert not hub.are_progress_bars_disabled()
    with library_bars(quiet=True):
        assert hub.are_progress_bars_disabled()
    assert not hub.are_progress_bars_disabled()
    with library_bars(quiet=False):
        assert not hub.are_progress_bars_disabled()


# ---- explore status: throughput and time left ------------------------------------------------------

def test_pace_is_per_hour_of_budget_and_the_time_left_is_the_nearest_stop():
    cfg = apply_overrides(Config(), ["run.hours=10"])
    pace = report.pace(cfg, rounds_done=4, images=1000, spent_s=2 * 3600)
    assert pace == {"images_kept_per_hour": 500.0, "rounds_per_hour": 2.0,
                    "estimated_left_s": 8 * 3600, "ends_by": "budget", "rounds_left": 16}
    cfg.run.rounds = 6       # 2 rounds left at 30 min each
    assert report.pace(cfg, 4, 1000, 2 * 3600) == {**pace, "estimated_left_s": 3600, "ends_by": "rounds",
                                                   "rounds_left": 2}
    cfg.run.max_images = 1250  # 250 images at 500 an hour
    assert report.pace(cfg, 4, 1000, 2 * 3600)["ends_by"] == "max_images"
    assert report.pace(cfg, 4, 1000, 2 * 3600)["estimated_left_s"] == 1800
    fresh = report.pace(apply_overrides(Config(), ["run.hours=10"]), 0, 0, 0.0)
    assert fresh == {"images_kept_per_hour": None, "rounds_per_hour": None,
                     "estimated_left_s": 10 * 3600, "ends_by": "budget", "rounds_left": None}


def test_status_prints_throughput_and_the_time_left(tmp_path):
    run = make_run(tmp_path / "run", "run.hours=2", "run.rounds=4")
    add_named_round(run, "rose", 0)
    add_named_round(run, "tulip", 1)
    run.budget_path.write_text(json.dumps({"spent_s": 1800.0}))
    result = runner.invoke(app, ["status", str(run.root)], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = dict(ln.split(": ", 1) for ln in result.output.splitlines())
    assert lines["rounds per hour"] == "4.0"
    assert lines["estimated left s"] == "1800.0" and lines["ends by"] == "rounds"
    assert lines["rounds left"] == "2"
    info = json.loads(runner.invoke(app, ["status", str(run.root), "--json"]).output)
    assert info["images_kept_per_hour"] == 0.0 and info["budget_left_s"] == 5400.0
