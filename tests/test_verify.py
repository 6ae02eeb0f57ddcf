"""`explore cache verify`: clean on a fresh crawl, and each kind of damage is named."""
import asyncio
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cache.db import MetaDB, WriterLock
from cache.index import VectorIndex
from cache.verify import repair, verify
from cli import app
from explorer.config import CrawlConfig
from explorer.crawl.crawler import CHEAP_EMBEDDING, CrawlItem, Crawler, open_cache
from explorer.sandbox.server import start_sandbox

CFG = CrawlConfig(image_size=48, workers=1, pool="thread", concurrency=8, per_host=8)


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    """A run-like cache: two rounds of queries, their attempts and images."""
    root = tmp_path_factory.mktemp("clean") / "cache"
    cache = open_cache(root, CFG)
    with start_sandbox(seed=0, profile="none") as server, \
            Crawler.for_cache(cache, CFG, allow=[server.host_port]) as crawler:
        for round_ in range(2):
            cache.db.start_round(round_)
            qid = cache.db.add_query(round_, f"concept {round_}", f"concept {round_}", "sandbox")
            cache.db.set_query_status(qid, "searched", n_results=12)
            urls = [f"{server.url}/img/{server.world.web_image_id(round_ * 12 + i, 1)}.jpg" for i in range(12)]
            urls.append(urls[0])  # a duplicate URL within the query is one attempt
            asyncio.run(crawler.crawl([CrawlItem(u, "a caption", qid, round_) for u in urls]))
            cache.db.set_query_status(qid, "done")
            cache.db.finish_round(round_)
    cache.close()
    return root


@pytest.fixture
def cache_dir(clean_cache, tmp_path):
    return shutil.copytree(clean_cache, tmp_path / "cache")


def sql(cache_dir, statement, *args):
    with sqlite3.connect(cache_dir / "explore.db") as con:
        return con.execute(statement, args).fetchall()


def one_image(cache_dir):
    (path, vec_id), = sql(cache_dir, "SELECT path, vec_id FROM images ORDER BY vec_id LIMIT 1")
    return cache_dir / path, vec_id


def test_a_fresh_cache_is_clean_and_the_cli_says_so(cache_dir):
    assert sql(cache_dir, "SELECT COUNT(*) FROM images")[0][0] >= 20
    assert verify(cache_dir, embedding=CHEAP_EMBEDDING) == []
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir)])
    assert result.exit_code == 0, result.output


def _missing_file(d):
    one_image(d)[0].unlink()
    return "images row without its file"


def _orphan_file(d):
    path, _ = one_image(d)
    data = path.read_bytes() + b"\0"
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    (d / "images" / sha[:2]).mkdir(exist_ok=True)
    (d / "images" / sha[:2] / f"{sha}.jpg").write_bytes(data)
    return "file without an images row"


def _corrupt_file(d):
    path, _ = one_image(d)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    return "file whose bytes do not match its name"


def _index_lacks_a_vector(d):
    _, vec_id = one_image(d)
    index = VectorIndex.load(d / "index" / "cheap.faiss", 768)
    index.index.remove_ids(np.array([vec_id], dtype=np.int64))
    index.save(d / "index" / "cheap.faiss")
    return "image missing from the index"


def _index_has_a_stranger(d):
    index = VectorIndex.load(d / "index" / "cheap.faiss", 768)
    v = np.random.default_rng(0).normal(size=(1, 768)).astype(np.float32)
    index.add(v / np.linalg.norm(v), np.array([10_000]))
    index.save(d / "index" / "cheap.faiss")
    return "index vector without an images row"


def _index_vector_swapped(d):
    index = VectorIndex.load(d / "index" / "cheap.faiss", 768)
    ids = index.ids()
    a, b = (index.index.index.reconstruct(i) for i in (0, 1))
    index.index.remove_ids(ids[:2])
    index.add(np.stack([b, a]), ids[:2])
    index.save(d / "index" / "cheap.faiss")
    return "index vector is not its image's embedding"


def _image_row_lost(d):
    sql(d, "DELETE FROM images WHERE vec_id = (SELECT MIN(vec_id) FROM images)")
    return "ok attempt without an images row"


def _image_in_the_wrong_round(d):
    sql(d, "UPDATE images SET round = 5 WHERE vec_id = (SELECT MIN(vec_id) FROM images)")
    return "image round differs from its query's"


def _query_unfinished_in_a_done_round(d):
    sql(d, "UPDATE queries SET status = 'searched' WHERE round = 0")
    return "round done with a query unfinished"


@pytest.mark.parametrize("damage", [_missing_file, _orphan_file, _corrupt_file, _index_lacks_a_vector,
                                    _index_has_a_stranger, _index_vector_swapped, _image_row_lost,
                                    _image_in_the_wrong_round, _query_unfinished_in_a_done_round])
def test_each_kind_of_damage_is_named_and_exits_non_zero(cache_dir, damage):
    kind = damage(cache_dir)
    problems = verify(cache_dir, embedding=CHEAP_EMBEDDING)
    assert any(p.startswith(kind) for p in problems), problems
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir)])
    assert result.exit_code == 1 and kind in result.output


def test_quick_skips_re_embedding(cache_dir):
    _index_vector_swapped(cache_dir)
    assert verify(cache_dir, deep=False, embedding=CHEAP_EMBEDDING) == []


def test_a_run_directory_supplies_the_database(cache_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (cache_dir / "explore.db").rename(run_dir / "explore.db")
    (cache_dir / "index").rename(run_dir / "index")   # a run's index sits beside its DB
    assert CliRunner().invoke(app, ["cache", "verify", str(cache_dir)]).exit_code == 1  # no database there
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output


# -- repair: what two writers on one database left ---------------------------------------------

def _unit(rng, n):
    v = rng.normal(size=(n, 768)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def race_damage(d, lost, fileless, overwritten, strays, twice, demoted=()):
    """The state two writers numbering from the same vec_id left: image rows dropped (their `ok`
    attempts kept), some of those files gone too, index vectors that are the other writer's
    images, vectors beyond the rows, an image kept by both from two URLs, and a URL both fetched
    whose `ok` the second writer replaced with `duplicate`. Arguments are positions in the images
    ordered by vec_id; returns {position: (sha256, url of its ok attempt)}."""
    rows = sql(d, "SELECT i.sha256, i.path, i.vec_id, a.url, a.query_id FROM images i "
                  "JOIN attempts a ON a.sha256 = i.sha256 AND a.outcome = 'ok' ORDER BY i.vec_id")
    for j in lost:
        sql(d, "DELETE FROM images WHERE sha256 = ?", rows[j][0])
    for j in fileless:
        (d / rows[j][1]).unlink()
    for j in demoted:
        sql(d, "UPDATE attempts SET outcome = 'duplicate', reason = 'same sha256 already cached' "
               "WHERE url = ? AND outcome = 'ok'", rows[j][3])
    for j in twice:
        sql(d, "INSERT INTO attempts(url, query_id, outcome, sha256) VALUES (?, ?, 'ok', ?)",
            rows[j][3] + "?copy", rows[j][4], rows[j][0])
    index = VectorIndex.load(d / "index" / "cheap.faiss", 768)
    rng = np.random.default_rng(len(overwritten) + strays)
    ids = np.asarray([rows[j][2] for j in overwritten], dtype=np.int64)
    index.index.remove_ids(ids)
    index.add(_unit(rng, len(ids)), ids)
    index.add(_unit(rng, strays), np.arange(strays) + len(rows))
    index.save(d / "index" / "cheap.faiss")
    return {j: (rows[j][0], rows[j][3]) for j in range(len(rows))}


def copy_files(src: Path, dst: Path) -> Path:
    """The files of a cache, without its empty prefix folders (making and removing them would
    take most of a drawn case's time)."""
    for path in src.rglob("*"):
        if path.is_file():
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / path.relative_to(src))
    return dst


@st.composite
def race_damages(draw, n):
    positions = st.lists(st.integers(0, n - 1), unique=True, max_size=n // 2)
    lost = draw(positions)
    fileless = draw(st.lists(st.sampled_from(lost), unique=True)) if lost else []
    kept = [j for j in range(n) if j not in lost]
    twice = draw(st.lists(st.sampled_from(kept), unique=True, max_size=3))
    demoted = draw(st.lists(st.sampled_from([j for j in kept if j not in twice] or [None]), unique=True, max_size=3))
    return lost, fileless, draw(positions), draw(st.integers(0, 3)), twice, [j for j in demoted if j is not None]


def test_repair_mends_every_race_damage_to_a_clean_cache(clean_cache):
    """Drawn damages of one clean cache (its size fixes what can be drawn, so @given is inside)."""
    n = sql(clean_cache, "SELECT COUNT(*) FROM images")[0][0]

    @settings(max_examples=15, deadline=None, database=None, derandomize=True)
    @given(race_damages(n))
    def mend(damage):
        with tempfile.TemporaryDirectory() as tmp:
            d = copy_files(clean_cache, Path(tmp) / "cache")
            images = race_damage(d, *damage)
            fileless = damage[1]
            done = repair(d, embedding=CHEAP_EMBEDDING)
            assert bool(done) == any(damage), damage
            assert verify(d, embedding=CHEAP_EMBEDDING) == [], done
            with MetaDB(d / "explore.db") as db:
                for j, (sha, url) in images.items():
                    if j in fileless:  # nothing to restore from: the next fetch gets it again
                        assert not db.has_image(sha) and not db.final_attempts([url]), url
                    else:
                        assert db.image(sha).first_url == url
                        assert db.final_attempts([url])[url].outcome == "ok"
                assert db.image_stats()[0] == n - len(fileless)
            assert repair(d, embedding=CHEAP_EMBEDDING) == []  # mended: nothing more to do

    mend()


def test_cli_repair_says_what_it_did_and_refuses_while_a_writer_holds_the_cache(cache_dir):
    race_damage(cache_dir, lost=[0, 1], fileless=[1], overwritten=[2], strays=1, twice=[])
    with WriterLock(cache_dir / "explore.db"):
        busy = CliRunner().invoke(app, ["cache", "verify", str(cache_dir), "--repair"])
    assert busy.exit_code == 1 and f"pid {os.getpid()}" in busy.output and "Traceback" not in busy.output
    result = CliRunner().invoke(app, ["cache", "verify", str(cache_dir), "--repair"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "restored 1 image rows" in out and "made 1 attempts" in out and "retryable" in out
    assert "clean" in out


def test_repair_rebuilds_an_unreadable_index_from_the_files(cache_dir):
    (cache_dir / "index" / "cheap.faiss").write_bytes(b"not a faiss index")
    assert any(p.startswith("index unreadable") for p in verify(cache_dir, embedding=CHEAP_EMBEDDING))
    done = repair(cache_dir, embedding=CHEAP_EMBEDDING)
    assert len(done) == 1 and "rebuilt" in done[0]
    assert verify(cache_dir, embedding=CHEAP_EMBEDDING) == []
