"""Store, metadata DB and FAISS index."""
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.db import MetaDB
from cache.index import VectorIndex
from cache.store import CacheFull, ImageStore


def unit(rng, n, d=16):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_store_is_content_addressed_atomic_and_capped(tmp_path):
    store = ImageStore(tmp_path, max_bytes=10)
    path = store.put("ab" + "0" * 62, b"12345")
    assert path == tmp_path / "images" / "ab" / ("ab" + "0" * 62 + ".jpg") and path.read_bytes() == b"12345"
    store.put("ab" + "0" * 62, b"12345")  # same content: nothing more written or counted
    assert store.used_bytes == 5
    with pytest.raises(CacheFull):
        store.put("cd" + "0" * 62, b"123456")
    assert not list(tmp_path.rglob("*.tmp*"))


def test_store_writes_into_a_prefix_folder_removed_since_it_opened(tmp_path):
    store = ImageStore(tmp_path, max_bytes=100)
    (tmp_path / "images" / "ef").rmdir()  # e.g. by hand, while a run is going
    assert store.put("ef" + "1" * 62, b"abc").read_bytes() == b"abc" and store.used_bytes == 3


def test_db_queries_attempts_images_and_transactions(tmp_path):
    db = MetaDB(tmp_path / "explore.db")
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    q = db.add_query(0, "tulip", "red tulip", "sandbox")
    db.set_query_status(q, "searched", n_results=3)
    with pytest.raises(ValueError):
        db.set_query_status(q, "bogus")
    with db.transaction():
        db.record_attempt("http://a/1", "ok", query_id=q, sha256="s1", status_code=200, bytes=10)
        db.record_attempt("http://a/2", "http_error", query_id=q, status_code=404)
        db.record_attempt("http://a/3", "timeout", query_id=q)
        db.add_image("s1", "images/s1/s1.jpg", 64, 48, 640, 480, bytes=10, first_url="http://a/1", query_id=q, vec_id=0)
        db.set_query_status(q, "done", n_kept=1)
    with pytest.raises(RuntimeError), db.transaction():
        db.record_attempt("http://a/4", "ok", query_id=q)
        with db.transaction():  # nested joins the outer one
            db.set_query_status(q, "failed", error="boom")
        raise RuntimeError("rolled back")
    assert db.queries()[0].status == "done" and db.queries(round=0)[0].n_kept == 1
    assert db.outcome_counts() == {"http_error": 1, "ok": 1, "timeout": 1}
    assert db.has_image("s1") and not db.has_image("s2")
    assert [i.sha256 for i in db.images_for_query(q)] == ["s1"]
    final = db.final_attempts(["http://a/1", "http://a/2", "http://a/3", "http://a/4"])
    assert "http://a/1" in final and "http://a/2" in final  # a 404 is final
    assert "http://a/3" not in final and "http://a/4" not in final
    db.record_attempt("http://a/3", "ok", query_id=q)  # the same (url, query) again: replaced, not added
    assert len(db.attempts(q)) == 3
    db.set_image_rewards({"s1": 0.5})
    assert db.image("s1").reward == 0.5
    assert db.get_search_results("ddgs", "tulip") is None
    db.put_search_results("ddgs", "tulip", [{"image": "http://x"}])
    assert db.get_search_results("ddgs", "tulip") == [{"image": "http://x"}]
    db.log_event("round_done", round=0, kept=1)
    assert db.events("round_done")[0]["message"] == {"round": 0, "kept": 1}
    assert db.image_stats() == (1, 10) and db.next_vec_id() == 1
    db.close()


def test_index_search_and_atomic_save_load(tmp_path):
    rng = np.random.default_rng(0)
    vecs = unit(rng, 50)
    index = VectorIndex(16)
    assert np.isneginf(index.max_similarity(vecs[:2])).all()
    index.add(vecs, np.arange(100, 150))
    sims, ids = index.search(vecs[:3], k=1)
    assert ids[:, 0].tolist() == [100, 101, 102] and np.allclose(sims[:, 0], 1.0, atol=1e-5)
    index.save(tmp_path / "i.faiss")
    again = VectorIndex.load(tmp_path / "i.faiss", 16)
    assert len(again) == 50 and sorted(again.ids().tolist()) == list(range(100, 150))
    assert len(VectorIndex.load(tmp_path / "missing.faiss", 16)) == 0
    assert len(VectorIndex.load(tmp_path / "i.faiss", 32)) == 0  # another embedding: start afresh


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_an_image_whose_vec_id_is_taken_rolls_back_with_its_ok_attempt(keeps):
    """Two writers numbering from the same vec_id: (sha, vec_id) pairs recorded as the crawl
    does, an `ok` attempt and its image row in one transaction. A pair whose vec_id is taken by
    another image fails whole: never an `ok` attempt without its row."""
    with tempfile.TemporaryDirectory() as tmp:
        db = MetaDB(Path(tmp) / "explore.db")
        for n, (sha, vec_id) in enumerate(keeps):
            try:
                with db.transaction():
                    db.record_attempt(f"http://a/{n}", "ok", sha256=f"s{sha}")
                    db.add_image(f"s{sha}", f"images/s{sha}.jpg", 8, 8, 8, 8, vec_id=vec_id)
            except sqlite3.IntegrityError:
                assert db.image(f"s{sha}") is None or db.image(f"s{sha}").vec_id != vec_id
        lost = db.conn.execute("SELECT COUNT(*) FROM attempts a LEFT JOIN images i ON i.sha256 = a.sha256 "
                               "WHERE i.sha256 IS NULL").fetchone()[0]
        db.close()
    assert lost == 0
