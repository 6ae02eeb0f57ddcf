import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "400"}   # one error line stays one line


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ["run", "resume", "rewards", "status", "eval", "fetch", "vocab", "sandbox", "cache"]:
        assert name in result.output


def test_cache_verify_given_a_run_directory_verifies_that_runs_cache(tmp_path):
    """The call a user types first: RUN_DIR, not RUN_DIR/cache with --run-dir RUN_DIR."""
    import asyncio

    from explorer.config import CrawlConfig
    from explorer.crawl.crawler import CrawlItem, Crawler, open_cache
    from explorer.sandbox.server import start_sandbox
    from tests.run_fixtures import make_run

    run = make_run(tmp_path / "run")
    cache_dir = run.cache_dir(run.load_config())
    cfg = CrawlConfig(image_size=48, workers=1, pool="thread", concurrency=4, per_host=4)
    cache = open_cache(cache_dir, cfg, db_path=run.db_path)
    with start_sandbox(seed=0, profile="none") as server, \
            Crawler.for_cache(cache, cfg, allow=[server.host_port]) as crawler:
        cache.db.start_round(0)
        qid = cache.db.add_query(0, "rose", "rose", "sandbox")
        cache.db.set_query_status(qid, "searched", n_results=6)
        urls = [f"{server.url}/img/{server.world.web_image_id(i, 1)}.jpg" for i in range(6)]
        asyncio.run(crawler.crawl([CrawlItem(u, "a rose", qid, 0) for u in urls]))
        cache.db.set_query_status(qid, "done")
        cache.db.finish_round(0)
    cache.close()
    assert any((cache_dir / "images").rglob("*.jpg"))

    result = runner.invoke(app, ["cache", "verify", str(run.root)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"{run.root} is a run directory: verifying its cache at {cache_dir}" in result.output
    assert "clean" in result.output


# ---- config: validated before anything is written; a run is pinned by its first round ------------

def _sandbox_run(root):
    """A sandbox-flowers run directory with its config and an empty database, as a first
    `explore run` leaves it."""
    from cache.db import MetaDB
    from explorer.config import SANDBOX_PRESET, Config, apply_overrides
    from explorer.session import RunDir

    run = RunDir(root)
    run.save_config(apply_overrides(Config(), SANDBOX_PRESET + [
        f"run.run_dir={root}", f"run.data_root={root.parent / 'data'}"]))
    MetaDB(run.db_path).close()
    return run


def _error_lines(result) -> list[str]:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return [ln for ln in result.output.splitlines() if ln.startswith("error:")]


def _one_error(result, *named: str) -> str:
    errors = _error_lines(result)
    assert len(errors) == 1, result.output
    for word in named:
        assert word in errors[0], (word, errors[0])
    return errors[0]


@pytest.mark.parametrize("args", [
    ["run", "--target", "sandbox-flowers"],
    ["fetch", "urls.txt", "--cache-dir", "cache"],
    ["vocab"],
    ["sandbox", "serve"],
])
def test_a_bad_value_is_refused_in_one_line_by_every_command(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "urls.txt").write_text("")
    result = runner.invoke(app, [*args, "--set", "crawl.concurrency=0"], env=WIDE)
    _one_error(result, "crawl.concurrency=0", "from 1 to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.txt"]   # nothing written


@pytest.mark.parametrize("option, named", [
    (["--port", "70000"], "sandbox.port=70000"),
    (["--port", "-1"], "sandbox.port=-1"),
    (["--profile", "nonesuch"], "sandbox.profile=nonesuch"),
])
def test_sandbox_serve_checks_its_own_options_as_it_checks_set(option, named):
    """--port, --profile and --seed are config fields too: a bad one is one line, not a traceback."""
    _one_error(runner.invoke(app, ["sandbox", "serve", *option], env=WIDE), named)


def test_resume_refuses_a_bad_value_and_a_bad_config_file_without_writing(tmp_path):
    run = _sandbox_run(tmp_path / "run")
    before = run.config_path.read_bytes()
    _one_error(runner.invoke(app, ["resume", str(run.root), "--set", "crawl.jpeg_quality=500"], env=WIDE),
               "crawl.jpeg_quality=500", "1 to 100")
    _one_error(runner.invoke(app, ["resume", str(run.root), "--hours", "0"], env=WIDE), "run.hours=0")
    assert run.config_path.read_bytes() == before

    run.config_path.write_text(before.decode().replace("per_host = 64", "per_host = 0"))
    _one_error(runner.invoke(app, ["resume", str(run.root)], env=WIDE), str(run.config_path), "crawl.per_host=0")


def test_resume_of_a_live_run_is_refused_before_it_writes_its_config(tmp_path):
    """flock locks belong to an open file: holding one here is what another process holding
    it looks like to the command."""
    run = _sandbox_run(tmp_path / "run")
    before = run.config_path.read_bytes()
    with run.lock():
        result = runner.invoke(app, ["resume", str(run.root), "--set", "crawl.concurrency=32"], env=WIDE)
    _one_error(result, "another explore process")
    assert run.config_path.read_bytes() == before




def test_a_first_run_that_failed_does_not_pin_its_config(tmp_path, monkeypatch, stop_at_build):
    real = tmp_path / "real"
    (real / "a").mkdir(parents=True)
    run_dir = tmp_path / "run"
    common = ["--run-dir", str(run_dir), "--engine", "none", "--data-root", str(tmp_path / "data"),
              "--init", "scratch"]   # a real target's default would be pretrained weights
    result = runner.invoke(app, ["run", "--target", f"folder:{tmp_path / 'missing'}", *common], env=WIDE)
    _one_error(result, "missing")

    seen = stop_at_build()
    result = runner.invoke(app, ["run", "--target", f"folder:{real}", *common, "--set", "crawl.concurrency=7"],
                           env=WIDE)
    _one_error(result, "stopped by the test")
    assert "never began its first round" in result.output
    assert [(c.run.target, c.crawl.concurrency) for c in seen] == [(f"folder:{real}", 7)]
    from explorer.config import Config
    assert Config.load(run_dir / "config.toml").run.target == f"folder:{real}"


def test_a_run_that_began_keeps_its_config(tmp_path, monkeypatch, stop_at_build):
    from cache.db import MetaDB

    run = _sandbox_run(tmp_path / "run")
    with MetaDB(run.db_path) as db:
        db.start_round(0)                         # begun, killed before its first checkpoint
    seen = stop_at_build()
    result = runner.invoke(app, ["run", "--target", "flowers102", "--run-dir", str(run.root),
                                 "--set", "crawl.concurrency=7"], env=WIDE)
    _one_error(result, "stopped by the test")
    assert "exists: resuming it" in result.output
    assert [(c.run.target, c.crawl.concurrency) for c in seen] == [("sandbox-flowers", 7)]
