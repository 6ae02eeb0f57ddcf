"""Errors the user can act on end in one line naming the problem (and the file), exit 1, no
traceback; real bugs keep theirs. Each broken state is built by hand, without running a round."""
from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cli import app
from explorer.errors import BadCheckpoint, BadSetting, CheckpointNotSaved, UserError
from tests.run_fixtures import add_named_round, make_run

WIDE = {"COLUMNS": "400"}


def one_line_error(args: list[str], *named: str) -> str:
    """Run the CLI; it must fail with exit 1 and one `error:` line that names each of `named`."""
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in named:
        assert word in errors[0], (word, errors[0])
    return errors[0]


# ---- the run's database ---------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DB_DAMAGE = {
    "truncated": _truncate,
    "emptied": lambda p: p.write_bytes(b""),
    "overwritten": lambda p: p.write_bytes(b"not a database, just text\n" * 200),
    "first page zeroed": lambda p: p.write_bytes(b"\0" * 4096 + p.read_bytes()[4096:]),
}


@pytest.fixture
def named_run(tmp_path):
    run = make_run(tmp_path / "run")
    for r in range(3):
        add_named_round(run, f"concept {r} " + "x" * 3000, r)   # a few pages of rows
    return run


@pytest.mark.parametrize("damage", DB_DAMAGE)
@pytest.mark.parametrize("command", ["status", "rewards", "verify"])
def test_a_damaged_database_is_one_line(named_run, damage, command):
    DB_DAMAGE[damage](named_run.db_path)
    (named_run.root / "cache").mkdir(exist_ok=True)
    args = ["cache", "verify", str(named_run.root)] if command == "verify" else [command, str(named_run.root)]
    one_line_error(args, str(named_run.db_path))


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "first page zeroed"])
def test_a_damaged_cache_database_is_one_line(named_run, damage, tmp_path):
    """The writer's side (cache stats, fetch, a run's start) opens it with MetaDB."""
    cache = tmp_path / "cache"
    cache.mkdir()
    db = cache / "explore.db"
    db.write_bytes(named_run.db_path.read_bytes())
    DB_DAMAGE[damage](db)
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    for args in (["cache", "stats", str(cache)], ["fetch", str(urls), "--cache-dir", str(cache)]):
        one_line_error(args, str(db))


@pytest.mark.parametrize("line", ["[1, 2]", '"a string"', "null", "3", "{}", '{"queries": 4}'])
def test_a_rounds_log_line_that_is_no_round_record_is_one_line(named_run, line):
    with named_run.rounds_log.open("a") as f:
        f.write(line + "\n")
    for command in ("status", "rewards"):
        one_line_error([command, str(named_run.root)], str(named_run.rounds_log), "line 4")


# ---- checkpoints ------------------------------------------------------------------------------

class NotWeights:
    """A pickled object of our own class: a weights-only load refuses it (it would run code)."""


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


BAD_CHECKPOINTS = {
    "empty": lambda: b"",
    "garbage": lambda: random.Random(5000).randbytes(5000),
    "truncated": lambda: _torch_bytes({"model": {"w": torch.zeros(1000)}})[:3000],
    "not weights-only": lambda: _torch_bytes({"model": NotWeights()}),
    "a bare tensor": lambda: _torch_bytes(torch.zeros(3)),
    "a dict of something else": lambda: _torch_bytes({"weights": torch.zeros(3)}),
    "another model's weights": lambda: _torch_bytes({"model": {"w": torch.zeros(3)}, "extra": {}}),
}


@pytest.fixture(scope="module")
def trainer(one_torch_thread):
    from explorer.config import Config, apply_overrides
    from explorer.model.mug import build_model
    from explorer.model.train import Trainer

    cfg = apply_overrides(Config(), ["model.name=tiny-64", "run.device=cpu"])
    return Trainer(cfg, build_model(cfg.model, vocab_size=100), "cpu")


@pytest.mark.parametrize("kind", BAD_CHECKPOINTS)
def test_a_checkpoint_that_cannot_be_loaded_is_a_bad_checkpoint(trainer, tmp_path, kind):
    path = tmp_path / "latest.pt"
    path.write_bytes(BAD_CHECKPOINTS[kind]())
    with pytest.raises(BadCheckpoint, match="latest.pt"):
        trainer.load_checkpoint(path)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=3000),
                      st.binary(max_size=3000).map(lambda b: b"\x80\x02" + b),   # a pickle's start
                      st.binary(max_size=3000).map(lambda b: b"PK\x03\x04" + b)))  # a zip's start
def test_any_damaged_checkpoint_bytes_are_a_bad_checkpoint(trainer, tmp_path, body):
    path = tmp_path / "latest.pt"
    path.write_bytes(body)
    with pytest.raises(BadCheckpoint, match="latest.pt"):
        trainer.load_checkpoint(path)


def test_a_checkpoint_that_refuses_to_unpickle_still_runs_nothing(trainer, tmp_path):
    """weights_only stays: the refused object is never built."""
    built = []

    class Tripwire:
        def __reduce__(self):
            return (built.append, ("ran",))

    path = tmp_path / "latest.pt"
    path.write_bytes(_torch_bytes({"model": Tripwire()}))
    with pytest.raises(BadCheckpoint):
        trainer.load_checkpoint(path)
    assert built == []


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_old_one(trainer, tmp_path, monkeypatch):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    import contextlib

    import explorer.model.train

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    path = tmp_path / "latest.pt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()

    @contextlib.contextmanager
    def full_disk(_path):
        with open("/dev/full", "wb") as f:
            yield f
    monkeypatch.setattr(explorer.model.train, "atomic_write", full_disk)
    with pytest.raises(CheckpointNotSaved, match="No space left on device") as err:
        trainer.save_checkpoint(path)
    assert "latest.pt" in str(err.value) and "explore resume" in str(err.value)
    assert path.read_bytes() == before


def _any_checkpoint(run) -> None:
    """A file where eval looks first: what fails is found before the checkpoint is read."""
    run.checkpoints.mkdir()
    run.latest_checkpoint.write_bytes(os.urandom(3000))


def test_eval_with_a_corrupt_checkpoint_is_one_line(tmp_path, one_torch_thread):
    run = make_run(tmp_path / "run", "model.name=tiny-64")
    _any_checkpoint(run)
    one_line_error(["eval", str(run.root), "--protocol", "knn"], str(run.latest_checkpoint))


# ---- settings: device, initial weights --------------------------------------------------------

@pytest.mark.parametrize("name", ["bogus", "cuda:x", "meta", "mps", "cuda", "cuda:7"])
def test_a_device_this_machine_lacks_is_a_bad_setting(name, monkeypatch):
    from explorer.model.learner import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadSetting, match="run.device"):
        pick_device(name)


def test_a_device_that_exists_is_taken():
    from explorer.model.learner import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_bogus_device_is_one_line(tmp_path, command):
    run = make_run(tmp_path / "run", "run.device=bogus")
    one_line_error([command, str(run.root)], "run.device", "bogus")


def test_model_init_from_a_missing_file_is_one_line(tmp_path, one_torch_thread):
    """(With a checkpoint the starting weights are not needed: tests/test_init.py.)"""
    run = make_run(tmp_path / "run", "model.name=tiny-64", f"model.init=file:{tmp_path / 'nowhere.pt'}")
    one_line_error(["resume", str(run.root)], "nowhere.pt")


# ---- folder: targets ---------------------------------------------------------------------------

def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(buf, "JPEG")
    return buf.getvalue()


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(buf, "PNG")
    return buf.getvalue()


UNREADABLE = {
    "empty.jpg": lambda: b"",
    "text.jpg": lambda: b"<html>not an image</html>",
    "cut.jpg": lambda: _jpeg((200, 10, 10))[:300],
    "cut.png": lambda: _png((10, 200, 10))[:120],
}


def _folder(root: Path, bad: str) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            (root / cls / f"{i}.jpg").write_bytes(_jpeg((60 * i, 100, 30 if cls == "a" else 220)))
    (root / "b" / bad).write_bytes(UNREADABLE[bad]())
    return root


@pytest.mark.parametrize("bad", UNREADABLE)
def test_an_unreadable_image_in_a_folder_target_is_named(tmp_path, bad):
    from explorer.inputs.targets import TargetError, load_folder

    folder = _folder(tmp_path / "mine", bad)
    with pytest.raises(TargetError, match=bad) as err:
        load_folder(folder)
    assert "1 unreadable image" in str(err.value) and isinstance(err.value, UserError)


def test_eval_of_a_folder_target_with_an_unreadable_image_is_one_line(tmp_path):
    folder = _folder(tmp_path / "mine", "cut.jpg")
    run = make_run(tmp_path / "run", f"run.target=folder:{folder}")
    _any_checkpoint(run)
    one_line_error(["eval", str(run.root)], str(folder / "b" / "cut.jpg"))


# ---- the FAISS index ------------------------------------------------------------------------------

def test_a_corrupt_index_is_one_line(tmp_path):
    from cache.paths import index_path_for

    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    from cache.db import MetaDB
    MetaDB(cache / "explore.db").close()
    index = index_path_for(cache)
    index.parent.mkdir()
    index.write_bytes(b"IxM2" + os.urandom(200))
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    for args in (["fetch", str(urls), "--cache-dir", str(cache)], ["cache", "stats", str(cache)]):
        one_line_error(args, str(index))


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only UserError is the user's: anything else is not swallowed by the one-line handler."""
    from explorer.run import report
    run = make_run(tmp_path / "run")
    monkeypatch.setattr(report, "status", lambda run: 1 / 0)
    result = CliRunner().invoke(app, ["status", str(run.root)])
    assert isinstance(result.exception, ZeroDivisionError)
