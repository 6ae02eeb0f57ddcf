"""The crawl pipeline end to end against a loopback server: outcomes in the DB and on disk."""
import asyncio
import io

import pytest
from PIL import Image

from explorer.config import CrawlConfig
from explorer.crawl.crawler import CHEAP_EMBEDDING, Crawler, CrawlItem, open_cache
from explorer.crawl.decontam import LeakIndex
from explorer.crawl.images import cheap_embedding
from explorer.records import UrlOutcome
from tests.crawl_fixtures import image_app, jpeg_bytes, serve


def cfg(**kw) -> CrawlConfig:
    return CrawlConfig(**(dict(image_size=64, min_side=16, pool="thread", workers=2, retries=0, db_batch=4) | kw))


def resized_copy(body: bytes, size, quality=60) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(body)).resize(size).save(out, "JPEG", quality=quality)
    return out.getvalue()


def crawl(cache, c, items, port, **kw):
    with Crawler.for_cache(cache, c, allow=[f"127.0.0.1:{port}"], **kw) as crawler:
        return asyncio.run(crawler.crawl(items))


FILES = {
    "/a.jpg": (jpeg_bytes(300, 200, seed=1), {}),
    "/b.jpg": (jpeg_bytes(300, 200, seed=2), {}),
    "/a-again.jpg": (jpeg_bytes(300, 200, seed=1), {}),                      # same bytes as a
    "/a-small.jpg": (resized_copy(jpeg_bytes(300, 200, seed=1), (150, 100)), {}),  # near copy of a
    "/page.jpg": (b"<!DOCTYPE html><html>not an image</html>", {"Content-Type": "image/jpeg"}),
    "/tiny.jpg": (jpeg_bytes(8, 8), {}),
}


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_every_item_gets_one_outcome_and_refetch_downloads_nothing(tmp_path, pool):
    app, hits = image_app(FILES)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        items = [CrawlItem(f"{base}{p}", caption=p) for p in [*FILES, "/missing.jpg"]]
        items.append(CrawlItem(f"{base}/a.jpg", caption="listed twice"))
        items.append(CrawlItem("http://10.0.0.1/x.jpg"))
        items.append(CrawlItem("file:///etc/hostname"))
        cache = open_cache(tmp_path, cfg(pool=pool))
        attempts = crawl(cache, cfg(pool=pool), items, port)
        by_path = {a.url.removeprefix(base): a for a in attempts}
        assert len(attempts) == len(FILES) + 3
        assert by_path["/b.jpg"].outcome == UrlOutcome.OK
        # whichever of a (twice, same bytes) and its near copy lands first is kept
        same = sorted(by_path[p].outcome.value for p in ("/a.jpg", "/a-again.jpg"))
        if by_path["/a-small.jpg"].outcome == UrlOutcome.OK:
            assert same == ["near_duplicate", "near_duplicate"]
        else:
            assert by_path["/a-small.jpg"].outcome == UrlOutcome.NEAR_DUPLICATE and same == ["duplicate", "ok"]
        assert by_path["/page.jpg"].outcome == UrlOutcome.NOT_IMAGE
        assert by_path["/tiny.jpg"].outcome == UrlOutcome.TOO_SMALL
        assert by_path["/missing.jpg"].outcome == UrlOutcome.HTTP_ERROR
        assert by_path["http://10.0.0.1/x.jpg"].outcome == UrlOutcome.FORBIDDEN_ADDRESS
        assert by_path["file:///etc/hostname"].outcome == UrlOutcome.BAD_URL
        db = cache.db
        assert sum(db.outcome_counts().values()) == len(attempts)
        assert db.image_stats()[0] == 2 and len(cache.index) == 2
        for row in db.iter_images():
            assert (tmp_path / row.path).exists() and row.orig_width in (150, 300)
        first_hits = dict(hits)
        assert first_hits["/a.jpg"] == 1 and first_hits["/missing.jpg"] == 1

        again = crawl(cache, cfg(pool=pool), items, port)
        assert hits == first_hits  # nothing fetched twice
        assert all(a.recorded_before for a in again if a.outcome != UrlOutcome.BAD_URL)
        assert sum(db.outcome_counts().values()) == len(attempts)

        # another query finding a known URL: one new row, answered from the DB, still no request
        more = crawl(cache, cfg(pool=pool), [CrawlItem(f"{base}/b.jpg", query_id=7), CrawlItem(f"{base}/page.jpg", query_id=7)], port)
        assert [a.outcome for a in more] == [UrlOutcome.DUPLICATE, UrlOutcome.NOT_IMAGE]
        assert hits == first_hits and db.outcome_counts(query_id=7) == {"duplicate": 1, "not_image": 1}
        cache.close()

    reopened = open_cache(tmp_path, cfg(pool=pool))
    assert len(reopened.index) == 2 and reopened.store.used_bytes == reopened.db.image_stats()[1]
    reopened.close()


def test_near_copies_of_target_test_images_are_dropped(tmp_path):
    test_image = jpeg_bytes(300, 200, seed=5)
    app, _ = image_app({"/leak.jpg": (resized_copy(test_image, (240, 160)), {}), "/fine.jpg": (jpeg_bytes(300, 200, seed=6), {})})
    leak = LeakIndex.from_images([Image.open(io.BytesIO(test_image)).convert("RGB")], cheap_embedding)
    with serve(app) as port:
        cache = open_cache(tmp_path, cfg())
        attempts = crawl(cache, cfg(), [CrawlItem(f"http://127.0.0.1:{port}/leak.jpg"),
                                        CrawlItem(f"http://127.0.0.1:{port}/fine.jpg")], port, leak_index=leak)
    assert {a.url.rsplit("/", 1)[1]: a.outcome for a in attempts} == {"leak.jpg": UrlOutcome.TEST_LEAK,
                                                                       "fine.jpg": UrlOutcome.OK}
    assert cache.db.image_stats()[0] == 1
    cache.close()


def test_files_are_read_only_when_allowed_and_cap_gives_disk_full(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.jpg").write_bytes(jpeg_bytes(200, 150, seed=10 + i))
    items = [CrawlItem((src / f"{i}.jpg").as_uri()) for i in range(3)]
    cache = open_cache(tmp_path / "c", cfg(cache_max_bytes=5_000))
    with Crawler.for_cache(cache, cfg(cache_max_bytes=5_000), corpus_root=src) as crawler:
        attempts = asyncio.run(crawler.crawl(items))
    outcomes = sorted(a.outcome.value for a in attempts)
    assert "ok" in outcomes and "disk_full" in outcomes
    assert cache.store.used_bytes <= 5_000
    cache.close()


def test_custom_embedding_and_index_reconcile_after_a_lost_index(tmp_path):
    app, _ = image_app({f"/{i}.jpg": (jpeg_bytes(200, 150, seed=20 + i), {}) for i in range(3)})
    with serve(app) as port:
        cache = open_cache(tmp_path, cfg())
        crawl(cache, cfg(), [CrawlItem(f"http://127.0.0.1:{port}/{i}.jpg") for i in range(3)], port)
        cache.close()
    (tmp_path / "index" / "cheap.faiss").unlink()  # as if killed before the index was saved
    cache = open_cache(tmp_path, cfg())
    with Crawler.for_cache(cache, cfg()) as crawler:
        assert crawler.reconcile_index() == 3 and len(cache.index) == 3
        assert crawler.reconcile_index() == 0
    cache.close()


def test_a_url_found_by_two_queries_is_fetched_once(tmp_path):
    app, hits = image_app({"/x.jpg": (jpeg_bytes(200, 150, seed=40), {})})
    with serve(app) as port:
        url = f"http://127.0.0.1:{port}/x.jpg"
        cache = open_cache(tmp_path, cfg())
        attempts = crawl(cache, cfg(), [CrawlItem(url, query_id=1), CrawlItem(url, query_id=2)], port)
    assert hits == {"/x.jpg": 1}
    assert {a.query_id: a.outcome for a in attempts} == {1: UrlOutcome.OK, 2: UrlOutcome.DUPLICATE}
    assert cache.db.outcome_counts(query_id=2) == {"duplicate": 1}
    assert [r.sha256 for r in cache.db.attempts(2)] == [a.sha256 for a in attempts if a.query_id == 1]
    cache.close()


def test_concurrent_calls_fetch_and_keep_a_shared_url_once(tmp_path):
    """The loop crawls each query's results in its own concurrent call; an URL two queries
    found is fetched once, kept once, and the second query records a duplicate."""
    files = {f"/{i}.jpg": (jpeg_bytes(200, 160, seed=10 + i), {}) for i in range(6)}
    app, hits = image_app(files)
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        cache = open_cache(tmp_path, cfg())

        async def both():
            with Crawler.for_cache(cache, cfg(), allow=[f"127.0.0.1:{port}"]) as crawler:
                calls = [crawler.crawl([CrawlItem(f"{base}{p}", p, qid) for p in files]) for qid in (1, 2)]
                return await asyncio.gather(*calls)

        first, second = asyncio.run(both())
    assert all(n == 1 for n in hits.values()) and len(hits) == len(files)
    outcomes = sorted(a.outcome.value for a in first + second)
    assert outcomes == ["duplicate"] * len(files) + ["ok"] * len(files)
    assert cache.db.image_stats()[0] == len(files)


def test_the_size_cap_counts_every_runs_files_in_a_shared_cache(tmp_path):
    """Run a fills a shared CACHE_DIR; run b, with its own DB and a cap just over what a left,
    cannot store its image: the cap is the folder's, not one run's."""
    files = {f"/{i}.jpg": (jpeg_bytes(200, 160, seed=20 + i), {}) for i in range(5)}
    app, _ = image_app(files)
    cache_dir = tmp_path / "shared"
    with serve(app) as port:
        urls = [f"http://127.0.0.1:{port}{p}" for p in files]
        (tmp_path / "a").mkdir()
        cache = open_cache(cache_dir, cfg(), db_path=tmp_path / "a" / "explore.db")
        assert [a.outcome for a in crawl(cache, cfg(), [CrawlItem(u) for u in urls[:4]], port)] == [UrlOutcome.OK] * 4
        cache.close()
        stored = sum(p.stat().st_size for p in (cache_dir / "images").rglob("*.jpg"))
        (tmp_path / "b").mkdir()
        capped = cfg(cache_max_bytes=stored + 1)
        cache = open_cache(cache_dir, capped, db_path=tmp_path / "b" / "explore.db")
        assert cache.store.used_bytes == stored
        [attempt] = crawl(cache, capped, [CrawlItem(urls[4])], port)
        cache.close()
    assert attempt.outcome == UrlOutcome.DISK_FULL and "cap" in attempt.reason


def test_runs_sharing_a_cache_dir_each_keep_what_they_fetch(tmp_path):
    """CACHE_DIR is shareable: a second run with its own DB keeps the images a first run
    already stored (not near-duplicates of them), stores no second copy, and both verify."""
    from cache.verify import verify

    files = {f"/{i}.jpg": (jpeg_bytes(200, 160, seed=10 + i), {}) for i in range(4)}
    app, hits = image_app(files)
    cache_dir = tmp_path / "shared"
    with serve(app) as port:
        items = [CrawlItem(f"http://127.0.0.1:{port}{p}", caption=p) for p in files]
        for run in ("a", "b"):
            (tmp_path / run).mkdir()
            cache = open_cache(cache_dir, cfg(), db_path=tmp_path / run / "explore.db")
            attempts = crawl(cache, cfg(), items, port)
            assert [a.outcome for a in attempts] == [UrlOutcome.OK] * 4, run
            assert cache.db.image_stats()[0] == 4
            cache.close()
    assert len(list((cache_dir / "images").rglob("*.jpg"))) == 4
    for run in ("a", "b"):
        assert (tmp_path / run / "index" / "cheap.faiss").exists()
        assert verify(cache_dir, tmp_path / run / "explore.db", embedding=CHEAP_EMBEDDING) == []
