"""Decontamination: re-posted copies of target test images are caught on the crawl's own path
(the worker's prepare_with_embedding, then LeakIndex.match), unrelated pictures are not, a crawl
records the copies as test_leak, and the evaluation says how many it removed."""
import asyncio
import io
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from explorer.assemble import removed_test_copies
from explorer.config import ConfigError, Config, CrawlConfig, apply_overrides
from explorer.crawl import Crawler, CrawlItem, open_cache
from explorer.decontam import HASH_BYTES, LeakIndex, copy_hashes, target_hashes, trim_borders
from explorer.evaluate import format_table
from explorer.images import Rejection, cheap_embedding, prepare_with_embedding
from explorer.records import UrlOutcome
from explorer.sandbox.repost import KINDS, repost
from explorer.sandbox.world import World
from tests.crawl_fixtures import image_app, serve

CFG = CrawlConfig(leak_hamming=100)   # the calibrated radius; the check is off by default
WORLD = World(0)
TARGET = "sandbox-flowers"
# (class, index) of the test pictures the leak index holds
TEST_IDS = [(y, i) for y in range(10) for i in range(3)]
TESTS = [WORLD.target_image(TARGET, "test", y, i) for y, i in TEST_IDS]
# share of copies caught per kind, at least (bench/decontam.py measures each, over more images)
FLOOR = {"flip": 0.95, "grayscale": 0.95, "jpeg": 0.95, "resize": 0.95, "jitter": 0.9, "rotate": 0.6,
         "border": 0.35, "crop": 0.2}


@pytest.fixture(scope="module")
def leak():
    return LeakIndex.from_images(TESTS, cheap_embedding)


def served(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def judged(leak: LeakIndex, bodies: list[bytes]) -> list[str | None]:
    """The crawl's verdict on each body that prepare keeps (reason or None)."""
    vecs, hashes = [], []
    for body in bodies:
        result = prepare_with_embedding(body, CFG)
        if isinstance(result, Rejection):
            continue
        cand, vec = result
        vecs.append(vec)
        hashes.append(np.frombuffer(cand.copy_hash, np.uint8).reshape(-1, HASH_BYTES))
    return leak.match(np.stack(vecs), hashes, CFG.leak_threshold, CFG.leak_hamming)


def test_an_image_and_its_exact_copies_match_at_distance_zero(leak):
    for im in TESTS[:5]:
        result = prepare_with_embedding(served(im, 95), CFG)
        cand, _ = result
        assert len(cand.copy_hash) == 2 * HASH_BYTES
        assert target_hashes(im).shape[1] == HASH_BYTES
    assert (leak.distances(np.stack([copy_hashes(im) for im in TESTS])) == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_copy_is_caught(leak, kind):
    rng = random.Random(kind)
    bodies = [served(repost(TESTS[rng.randrange(len(TESTS))], kind, random.Random(rng.random())),
                     rng.randint(70, 95)) for _ in range(40)]
    verdicts = judged(leak, bodies)
    caught = sum(v is not None for v in verdicts) / len(verdicts)
    assert caught >= FLOOR[kind], (kind, caught)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(TESTS) - 1), st.sampled_from(["flip", "grayscale", "jpeg", "resize"]),
       st.integers(0, 2**32 - 1))
def test_copies_that_keep_the_whole_picture_are_caught_whatever_their_parameters(leak, which, kind, seed):
    assert judged(leak, [served(repost(TESTS[which], kind, random.Random(seed)))])[0] is not None


def test_unrelated_pictures_are_not_caught(leak):
    rng = random.Random(7)
    others = [WORLD.render(f"c{rng.randrange(len(WORLD.concepts))}v{rng.randrange(40)}") for _ in range(80)]
    others += [WORLD.target_image(TARGET, "test", y, 10) for y in range(10)]  # same classes, not in the index
    verdicts = judged(leak, [served(im) for im in others])
    assert sum(v is not None for v in verdicts) <= 2, [v for v in verdicts if v]


def test_the_sandbox_serves_every_kind_of_repost_and_they_are_caught(leak):
    ids = [WORLD.leak_image_id(TARGET, y, i, k) for y, i in TEST_IDS for k in (1, 2, 3)]
    kinds = [WORLD.repost_kind(i) for i in ids]
    assert set(kinds) == set(KINDS)
    assert WORLD.encode(ids[0]) == World(0).encode(ids[0])  # a pure function of the seed and id
    verdicts = judged(leak, [WORLD.encode(i) for i in ids])
    assert sum(v is not None for v in verdicts) >= 0.8 * len(verdicts)


def test_trimming_finds_a_frame_and_leaves_a_flat_picture_whole():
    g = np.full((64, 64), 200.0, np.float32)
    g[5:60, 8:58] = np.random.default_rng(0).uniform(0, 255, (55, 50))
    assert trim_borders(g).shape == (53, 48)  # (and the line each side that would blend into it)
    flat = np.full((64, 64), 90.0, np.float32)
    assert trim_borders(flat) is flat


def test_a_candidate_without_hashes_is_judged_by_its_cosine(leak):
    cand, vec = prepare_with_embedding(served(TESTS[0]), CFG)
    _, other = prepare_with_embedding(served(WORLD.render("c5v5")), CFG)
    verdicts = leak.match(np.stack([vec, other]), [None, None], CFG.leak_threshold, CFG.leak_hamming)
    assert verdicts[0].startswith("cosine") and verdicts[1] is None


def test_leak_hamming_is_validated():
    assert apply_overrides(Config(), ["crawl.leak_hamming=-1"]).crawl.leak_hamming == -1
    with pytest.raises(ConfigError):
        apply_overrides(Config(), ["crawl.leak_hamming=2000"])


def test_a_crawl_records_reposted_copies_as_test_leaks_and_eval_counts_them(tmp_path, leak):
    rng = random.Random(3)
    files = {f"/copy-{kind}.jpg": (served(repost(TESTS[i], kind, random.Random(rng.random()))), {})
             for i, kind in enumerate(["flip", "grayscale", "jpeg", "resize"])}
    files["/other.jpg"] = (served(WORLD.render("c900v3")), {})
    app, _ = image_app(files)
    cfg = CrawlConfig(pool="thread", workers=2, retries=0, leak_hamming=100)
    with serve(app) as port:
        cache = open_cache(tmp_path, cfg)
        with Crawler.for_cache(cache, cfg, allow=[f"127.0.0.1:{port}"], leak_index=leak) as crawler:
            attempts = asyncio.run(crawler.crawl([CrawlItem(f"http://127.0.0.1:{port}{p}") for p in files]))
        outcomes = {a.url.rsplit("/", 1)[1]: a.outcome for a in attempts}
        assert outcomes.pop("other.jpg") == UrlOutcome.OK
        assert set(outcomes.values()) == {UrlOutcome.TEST_LEAK}
        assert cache.db.outcome_counts()["test_leak"] == 4 and cache.db.image_stats()[0] == 1
        cache.close()
    assert removed_test_copies(tmp_path / "explore.db") == 4
    assert removed_test_copies(tmp_path / "missing.db") == 0
    results = {"target": TARGET, "n_train": 3, "n_test": 2, "classes": 2, "k": 5, "n_labels": {1.0: 3},
               "knn": {1.0: 0.5}, "test_copies_removed": 4}
    table = format_table(results)
    assert "test-image copies removed by the crawl: 4" in str(table.caption)
