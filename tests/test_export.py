"""`explore export` (explorer/run/export.py) on run directories built by hand: webdataset shards
read back with `webdataset`, parquet read back with pyarrow, the --min-reward filter, image files
that are missing, unreadable or damaged, hostile text, the output folder's rules, an interrupted
or killed export, and the command itself."""
import contextlib
import hashlib
import importlib.util
import io
import json
import math
import sqlite3
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from cache.paths import image_relpath
from explorer.run import export
from explorer.session import RunDir
from tests.crawl_fixtures import noisy_jpeg
from tests.run_fixtures import make_run

# in the dev extra, so CI reads the shards back; without it the parquet tests still run
needs_webdataset = pytest.mark.skipif(importlib.util.find_spec("webdataset") is None,
                                      reason="webdataset is not installed (pip install -e '.[dev]')")
FORMATS = [pytest.param("webdataset", marks=needs_webdataset), "parquet"]
HOSTILE = "<b>\x00\x07\x1b[2J\u202e\r\nname\ud7ff\U0001f600 \"q\" 'x' \\ " + "long " * 20_000




def store(run: RunDir, data: bytes) -> str:
    """Put an image file into the run's cache as the crawl does; its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    path = run.root / "cache" / image_relpath(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


def add_query(con, round_: int, concept: str, refinement: str = "") -> int:
    return con.execute(
        "INSERT INTO queries(round, concept, text, engine, status, reward, refinement) "
        "VALUES (?, ?, ?, 'sandbox', 'done', 0.5, ?)",
        (round_, concept, f"{concept} photo", refinement)).lastrowid


def add_image(con, sha: str, qid: int, round_: int, caption: str, reward: float | None,
              fresh: float | None = None) -> None:
    con.execute(
        "INSERT INTO images(sha256, path, width, height, first_url, caption, query_id, round, reward, "
        "fresh_reward, vec_id) VALUES (?, ?, 24, 24, ?, ?, ?, ?, ?, ?, "
        "(SELECT COALESCE(MAX(vec_id), -1) + 1 FROM images))",
        (sha, image_relpath(sha), f"https://example.com/{sha[:8]}.jpg", caption, qid, round_, reward, fresh))


@pytest.fixture
def run(tmp_path) -> RunDir:
    """Seven kept images of two concepts; rewards 0.0 .. 0.6, the last re-scored to 0.9 by a
    later encoder, and one image not scored yet."""
    run = make_run(tmp_path / "run")
    with contextlib.closing(sqlite3.connect(run.db_path)) as con, con:
        tulip, rose = add_query(con, 0, "tulip"), add_query(con, 1, "rose", "page:2")
        for i in range(7):
            add_image(con, store(run, noisy_jpeg(i, 24)), tulip if i < 4 else rose, 0 if i < 4 else 1,
                      f"picture {i}", i / 10, fresh=0.9 if i == 6 else None)
        add_image(con, store(run, noisy_jpeg(7, 24)), rose, 1, "picture 7", None)
    return run


def cached(run: RunDir, sha: str) -> bytes:
    return (run.root / "cache" / image_relpath(sha)).read_bytes()


def tar_urls(out) -> list[str]:
    return sorted(str(p) for p in out.glob("shard-*.tar"))


def read_samples(out) -> list[dict]:
    import webdataset

    return list(webdataset.WebDataset(tar_urls(out), shardshuffle=False))


@needs_webdataset
def test_webdataset_shards_read_back_with_webdataset(run, tmp_path):
    out = tmp_path / "wds"
    summary = export.export_run(run, out, "webdataset", shard_size=3)
    samples = read_samples(out)
    assert len(samples) == summary.samples == 8
    assert len(tar_urls(out)) == len(summary.shards) == math.ceil(8 / 3)
    seen = set()
    for s in samples:
        meta = json.loads(s["json"])
        sha = s["__key__"]
        assert meta["sha256"] == sha == hashlib.sha256(s["jpg"]).hexdigest()
        assert s["jpg"] == cached(run, sha)                         # the bytes as stored
        with Image.open(io.BytesIO(s["jpg"])) as im, Image.open(io.BytesIO(cached(run, sha))) as want:
            assert im.format == "JPEG" and im.tobytes() == want.tobytes()
        i = int(s["txt"].decode().split()[-1])
        assert s["txt"].decode() == f"picture {i}"
        assert meta["concept"] == ("tulip" if i < 4 else "rose")
        assert meta["query"] == meta["concept"] + " photo"
        assert meta["refinement"] == ("" if i < 4 else "page:2")
        assert meta["reward"] == {6: 0.9, 7: None}.get(i, i / 10)  # the freshest; none if never scored
        assert meta["url"] == f"https://example.com/{sha[:8]}.jpg"
        assert (meta["round"], meta["width"], meta["height"]) == (0 if i < 4 else 1, 24, 24)
        seen.add(i)
    assert seen == set(range(8))
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["samples"] == 8 and manifest["format"] == "webdataset"
    assert manifest["shards"] == [p.split("/")[-1] for p in tar_urls(out)]
    assert manifest["bytes"] == sum((out / n).stat().st_size for n in manifest["shards"]) == summary.bytes
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []   # no temp file left


def test_parquet_reads_back_with_pyarrow(run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 2)   # several row groups per file
    out = tmp_path / "pq"
    summary = export.export_run(run, out, "parquet", shard_size=5)
    files = sorted(out.glob("shard-*.parquet"))
    assert [f.name for f in files] == summary.shards == ["shard-000000.parquet", "shard-000001.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [5, 3]
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 3
    rows = pq.read_table(out).to_pylist()            # the folder as a dataset: the manifest is skipped
    assert len(rows) == 8
    for r in rows:
        assert r["image"] == cached(run, r["sha256"])
        i = int(r["caption"].split()[-1])
        assert r["concept"] == ("tulip" if i < 4 else "rose")
        assert r["reward"] == {6: 0.9, 7: None}.get(i, i / 10)
        assert (r["width"], r["height"], r["url"]) == (24, 24, f"https://example.com/{r['sha256'][:8]}.jpg")


@pytest.mark.parametrize("fmt", FORMATS)
def test_min_reward_keeps_the_images_at_or_above_it_and_none_unscored(run, tmp_path, fmt):
    out = tmp_path / fmt
    summary = export.export_run(run, out, fmt, min_reward=0.3)
    if fmt == "webdataset":
        rewards = sorted(json.loads(s["json"])["reward"] for s in read_samples(out))
    else:
        rewards = sorted(pq.read_table(out)["reward"].to_pylist())
    assert rewards == [0.3, 0.4, 0.5, 0.9]       # 0.6 re-scored to 0.9 counts as 0.9
    assert summary.filtered == 4
    assert json.loads((out / "_manifest.json").read_text())["filters"]["min_reward"] == 0.3


@needs_webdataset
def test_files_missing_unreadable_or_damaged_are_skipped_and_counted(run, tmp_path):
    shas = [s["__key__"] for s in read_samples(_export(run, tmp_path / "all"))]
    files = [run.root / "cache" / image_relpath(sha) for sha in shas]
    files[0].unlink()
    files[1].write_bytes(b"not the bytes its name says")
    files[2].unlink()
    files[2].mkdir()                                # reading it fails
    out = tmp_path / "out"
    summary = export.export_run(run, out, "webdataset", shard_size=2)
    assert summary.skipped == {"missing": 1, "damaged": 1, "unreadable": 1}
    assert summary.samples == len(read_samples(out)) == 5
    assert {s["__key__"] for s in read_samples(out)} == set(shas[3:])
    assert json.loads((out / "_manifest.json").read_text())["skipped"] == dict(summary.skipped)
    assert "skipped 3 (damaged 1, missing 1, unreadable 1)" in export.summary_line(summary)


def _export(run, out, fmt="webdataset"):
    export.export_run(run, out, fmt)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_text_survives_as_data(tmp_path, fmt):
    """Control characters, bidi overrides, markup, a 100 kB caption, and bytes that are not
    UTF-8 (another tool's row): the export carries them, never chokes on them."""
    run = make_run(tmp_path / "run")
    sha, odd = store(run, noisy_jpeg(1, 24)), store(run, noisy_jpeg(2, 24))
    with contextlib.closing(sqlite3.connect(run.db_path)) as con, con:
        add_image(con, sha, add_query(con, 0, HOSTILE), 0, HOSTILE, 0.5)
        qid = con.execute("INSERT INTO queries(round, concept, text, engine, status) VALUES "
                          "(0, CAST(X'726fff7365' AS TEXT), CAST(X'eda080' AS TEXT), 'sandbox', 'done')").lastrowid
        add_image(con, odd, qid, 0, "", 0.5)
        con.execute("UPDATE images SET caption = CAST(X'6361ff70' AS TEXT) WHERE sha256 = ?", (odd,))
    out = _export(run, tmp_path / "out", fmt)
    if fmt == "webdataset":
        got = {s["__key__"]: (s["txt"].decode("utf-8"), json.loads(s["json"])) for s in read_samples(out)}
        got = {k: (caption, meta["concept"], meta["query"]) for k, (caption, meta) in got.items()}
    else:
        got = {r["sha256"]: (r["caption"], r["concept"], r["query"]) for r in pq.read_table(out).to_pylist()}
    assert got[sha] == (HOSTILE, HOSTILE, HOSTILE + " photo")
    assert got[odd] == ("ca\ufffdp", "ro\ufffdse", "\ufffd\ufffd\ufffd")


@needs_webdataset
def test_an_out_dir_holding_an_export_is_refused_unless_overwritten(run, tmp_path):
    out = _export(run, tmp_path / "out", "parquet")
    (out / "shard-notes.txt").write_text("mine")     # the user's, not a shard
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(export.ExportError, match="already holds an export"):
        export.export_run(run, out, "webdataset")
    assert sorted(p.name for p in out.iterdir()) == before
    export.export_run(run, out, "webdataset", shard_size=4, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "shard-000000.tar", "shard-000001.tar",
                                                     "shard-notes.txt"]
    stray = tmp_path / "killed"               # a killed export's temp file alone is an export's
    stray.mkdir()
    (stray / ".shard-000003.tar.tmp").write_bytes(b"half")
    with pytest.raises(export.ExportError, match="already holds an export"):
        export.export_run(run, stray, "parquet")
    export.export_run(run, stray, "parquet", overwrite=True)
    assert sorted(p.name for p in stray.iterdir()) == ["_manifest.json", "shard-000000.parquet"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(export.ExportError, match="is a file"):
        export.export_run(run, tmp_path / "a-file", "parquet")


@pytest.mark.parametrize("killed", [False, True], ids=["interrupted", "killed"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stopped_export_leaves_only_whole_shards_and_no_manifest(run, tmp_path, monkeypatch, fmt, killed):
    """Stopped while its third shard is being written: Ctrl-C removes that shard's temp file; a
    kill -9 (no clean-up at all) leaves it, hidden, under a name no reader takes for a shard."""
    real, calls = export.read_image, []

    def stops_at_the_sixth(cache_dir, row):
        calls.append(row)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(cache_dir, row)
    monkeypatch.setattr(export, "read_image", stops_at_the_sixth)
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 1)      # the parquet file is open too
    left_open, aborts = [], {cls: cls.abort for cls in (export.TarShards, export.ParquetShards)}
    if killed:   # no clean-up; the writers are kept, not collected mid-test with their files open
        for cls in aborts:
            monkeypatch.setattr(cls, "abort", lambda self: left_open.append(self))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export.export_run(run, out, fmt, shard_size=2)
    ext = "tar" if fmt == "webdataset" else "parquet"
    left = sorted(p.name for p in out.iterdir())
    whole = [f"shard-000000.{ext}", f"shard-000001.{ext}"]
    assert left == ([f".shard-000002.{ext}.tmp"] + whole if killed else whole)
    if fmt == "webdataset":
        assert len(read_samples(out)) == 4
    else:
        assert pq.read_table(out).num_rows == 4
    with pytest.raises(export.ExportError):                # what is left is an export's: refused
        export.export_run(run, out, fmt)
    for writer in left_open:
        aborts[type(writer)](writer)
    export.export_run(run, out, fmt, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", f"shard-000000.{ext}"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_run_exports_no_shard(tmp_path, fmt):
    run = make_run(tmp_path / "run")
    summary = export.export_run(run, tmp_path / "out", fmt)
    assert summary.samples == 0 and summary.shards == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_manifest.json"]


def test_the_database_is_read_a_page_at_a_time(run):
    """Pages end where they should: every image once, however the page size falls."""
    from cache.db import MetaDB

    with MetaDB.reading(run.db_path) as db:
        whole = [r.sha256 for r in db.exported_images(page=1000)]
        for page in (1, 2, 3, 8):
            assert [r.sha256 for r in db.exported_images(page=page)] == whole
    assert len(whole) == len(set(whole)) == 8


def test_without_webdataset_one_line_says_how_to_install_it(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)      # import webdataset -> ImportError
    with pytest.raises(export.ExportError, match=r"pip install -e '\.\[export\]'"):
        export.export_run(run, tmp_path / "wds", "webdataset")
    assert not (tmp_path / "wds").exists()
    assert export.export_run(run, tmp_path / "pq", "parquet").samples == 8


@needs_webdataset
def test_explore_export_end_to_end(run, tmp_path):
    from cli import app

    cli = CliRunner()
    out = tmp_path / "out"
    result = cli.invoke(app, ["export", str(run.root), "--format", "webdataset", "--out", str(out),
                              "--min-reward", "0.2", "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    assert "exported 5 images" in result.output and "in 3 webdataset shards" in result.output
    assert len(read_samples(out)) == 5 and len(tar_urls(out)) == 3

    for args, message in [
        (["--format", "webdataset"], "already holds an export"),
        (["--format", "csv", "--overwrite"], "unknown export format 'csv'"),
        (["--shard-size", "0", "--overwrite"], "--shard-size must be at least 1"),
    ]:
        result = cli.invoke(app, ["export", str(run.root), "--out", str(out), *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1

    result = cli.invoke(app, ["export", str(tmp_path / "nothing"), "--out", str(out)])
    assert result.exit_code == 1 and "is not a run directory" in result.output
