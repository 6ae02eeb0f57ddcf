"""The corpus engine: a local folder or table of captioned images, searched by caption
embedding (the real offline text model, loaded once for this file)."""
import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import explorer.engines.corpus as corpus
from explorer.config import CrawlConfig
from explorer.crawl.crawler import Crawler, CrawlItem, open_cache
from explorer.engines import CorpusEngine, make_engine
from explorer.engines.corpus import caption_from_name, list_corpus
from explorer.records import UrlOutcome
from tests.crawl_fixtures import jpeg_bytes
from tests.test_localfile import unblock_fifo


def write_image(path: Path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "lake"
    write_image(root / "roses" / "red_rose_1.jpg", "red")
    write_image(root / "roses" / "red-rose-2.png", "darkred")
    write_image(root / "vehicles" / "blue_sports_car.jpg", "blue")
    write_image(root / "vehicles" / "IMG_0042.webp", "gray")
    (root / "vehicles" / "IMG_0042.txt").write_text("a yellow school bus parked on a street\n")
    write_image(root / "misc" / "0001.jpg", "orange")
    write_image(root / "misc" / "0002.jpg", "white")
    (root / "misc" / "captions.jsonl").write_text(
        json.dumps({"file": "0001.jpg", "caption": "a bowl of ramen noodle soup"}) + "\n"
        + "not json\n"
        + json.dumps({"file_name": "0002.jpg", "text": "snow-covered mountain peak"}) + "\n")
    write_image(root / ".thumbs" / "rose.jpg", "red")         # hidden: skipped
    (root / "notes.md").write_text("not an image")
    return root


def cfg_for(tmp_path) -> CrawlConfig:
    return CrawlConfig(corpus_cache_dir=str(tmp_path / "emb-cache"))


def file_path(uri: str) -> Path:
    parts = urlsplit(uri)
    assert parts.scheme == "file"
    return Path(url2pathname(parts.path))


def test_folder_captions_come_from_sidecars_listings_then_names(folder):
    items = {file_path(it.image).relative_to(folder).as_posix(): it.caption
             for it in list_corpus(folder)}
    assert items == {
        "misc/0001.jpg": "a bowl of ramen noodle soup",
        "misc/0002.jpg": "snow-covered mountain peak",
        "roses/red-rose-2.png": "roses red rose",
        "roses/red_rose_1.jpg": "roses red rose",
        "vehicles/IMG_0042.webp": "a yellow school bus parked on a street",
        "vehicles/blue_sports_car.jpg": "vehicles blue sports car",
    }
    assert caption_from_name(folder / "a" / "2024_07_01.jpg", folder) == "a"


def test_folder_search_ranks_by_caption_and_caches_embeddings(folder, tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path)
    engine = make_engine(f"corpus:{folder}", cfg)
    assert isinstance(engine, CorpusEngine)

    async def ask(engine, *queries, k=2):
        return [await engine.search(q, k) for q in queries]

    rose, bus, soup = asyncio.run(ask(engine, "rose", "school bus", "noodles"))
    assert all(o.ok and len(o.results) == 2 for o in (rose, bus, soup))
    assert {file_path(r.image).parent.name for r in rose.results} == {"roses"}
    assert bus.results[0].title == "a yellow school bus parked on a street"
    assert soup.results[0].title == "a bowl of ramen noodle soup"
    top = rose.results[0]
    assert top.source == "corpus" and top.title == "roses red rose"
    assert file_path(top.image).is_absolute() and file_path(top.image).is_file()

    many = asyncio.run(ask(engine, "anything", k=100))[0]
    assert len(many.results) == 6                              # capped by the collection

    cached = list((tmp_path / "emb-cache").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[0] == 6
    embedded = []
    real = corpus.embed_texts
    monkeypatch.setattr(corpus, "embed_texts",
                        lambda texts, **kw: embedded.append(list(texts)) or real(texts, **kw))
    again = asyncio.run(ask(CorpusEngine(str(folder), cfg), "rose"))[0]
    assert embedded == [["rose"]]                              # captions came from the cache
    assert again.results == rose.results

    (folder / "roses" / "red_rose_1.txt").write_text("a wilted tulip")  # captions changed
    embedded.clear()
    asyncio.run(ask(CorpusEngine(str(folder), cfg), "rose"))
    assert len(embedded[0]) == 6


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_corpus(tmp_path, kind):
    write_image(tmp_path / "local" / "cat.jpg", "gray")
    table = pd.DataFrame({
        "url": ["https://example.org/a/rose_garden.jpg", "https://example.org/b/truck.jpg",
                "local/cat.jpg", "", "http://example.org/c/pink_rose.png"],
        "caption": ["a garden full of red roses", "a red pickup truck", "a tabby cat asleep",
                    "no url here", "a single pink rose in a vase"],
        "width": [640, 800, 8, 0, ""],
    })
    path = tmp_path / f"lake.{kind}"
    if kind == "csv":
        table.to_csv(path, index=False)
    else:
        table.astype({"width": str}).to_parquet(path)
    engine = make_engine(f"corpus:{path}", cfg_for(tmp_path))
    out = asyncio.run(engine.search("rose", 2))
    assert out.ok
    assert {r.image for r in out.results} == {"https://example.org/a/rose_garden.jpg",
                                               "http://example.org/c/pink_rose.png"}
    assert {r.width for r in out.results} == {640, 0}
    cat = asyncio.run(engine.search("cat", 1)).results[0]
    assert cat.title == "a tabby cat asleep" and file_path(cat.image) == tmp_path / "local" / "cat.jpg"
    assert len(engine.items) == 4                              # the row without a url is dropped


def test_bad_corpora_are_clear_errors(tmp_path):
    cfg = cfg_for(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        CorpusEngine(str(tmp_path / "empty"), cfg)
    pd.DataFrame({"link": ["https://x.org/a.jpg"], "caption": ["a"]}).to_csv(tmp_path / "t.csv")
    with pytest.raises(ValueError, match="needs columns url, caption; it lacks url"):
        CorpusEngine(str(tmp_path / "t.csv"), cfg)
    (tmp_path / "t.json").write_text("[]")
    with pytest.raises(ValueError, match="neither a folder nor"):
        CorpusEngine(str(tmp_path / "t.json"), cfg)


@pytest.fixture
def hostile_table(tmp_path) -> tuple[Path, dict[str, str]]:
    """A corpus table whose rows name good images and everything that must not be read:
    lake/table.csv and {url as listed: what it is}."""
    lake, outside = tmp_path / "lake", tmp_path / "outside"
    (lake / "good").mkdir(parents=True)
    outside.mkdir()
    (lake / "good" / "a.jpg").write_bytes(jpeg_bytes(200, 150, seed=1))
    (lake / "good" / "b.jpg").write_bytes(jpeg_bytes(200, 150, seed=2))
    (lake / "big.jpg").write_bytes(jpeg_bytes(200, 150, seed=3) + bytes(60_000))
    os.mkfifo(lake / "pipe.jpg")
    (lake / "folder.jpg").mkdir()
    for i, name in enumerate(["linked.jpg", "absolute.jpg", "dotdot.jpg"]):
        (outside / name).write_bytes(jpeg_bytes(200, 150, seed=10 + i))
    (lake / "link_out.jpg").symlink_to(outside / "linked.jpg")
    rows = {"good/a.jpg": "good", str(lake / "good" / "b.jpg"): "good", "big.jpg": "big",
            "/dev/zero": "device", "pipe.jpg": "fifo", "folder.jpg": "folder",
            "link_out.jpg": "outside", str(outside / "absolute.jpg"): "outside",
            "../outside/dotdot.jpg": "outside"}
    pd.DataFrame({"url": list(rows), "caption": list(rows.values())}).to_csv(lake / "table.csv", index=False)
    return lake / "table.csv", rows


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["thread", "process"])
@pytest.mark.parametrize("allow_outside", [False, True])
def test_crawl_reads_only_regular_files_under_the_corpus_root(tmp_path, hostile_table, pool, allow_outside):
    table, rows = hostile_table
    cfg = CrawlConfig(corpus_cache_dir=str(tmp_path / "emb-cache"), pool=pool, workers=1, image_size=64,
                      min_side=16, max_bytes=50_000, corpus_allow_outside=allow_outside)
    engine = CorpusEngine(str(table), cfg)
    assert engine.root == table.parent.resolve() and len(engine.items) == len(rows)
    what = {item.image: rows[row] for item, row in zip(engine.items, rows)}
    cache = open_cache(tmp_path / "cache", cfg)
    try:
        with Crawler.for_cache(cache, cfg, corpus_root=engine.root) as crawler:
            asyncio.run(crawler.crawl([CrawlItem(it.image, it.caption) for it in engine.items]))
    finally:
        unblock_fifo(table.parent / "pipe.jpg")
    recorded = {url: (UrlOutcome(outcome), reason) for url, outcome, reason
                in cache.db.conn.execute("SELECT url, outcome, reason FROM attempts")}
    stored = cache.db.image_stats()[0]
    cache.close()
    assert recorded.keys() == what.keys()
    expected = {"good": UrlOutcome.OK, "big": UrlOutcome.TOO_LARGE,
                "outside": UrlOutcome.OK if allow_outside else UrlOutcome.FORBIDDEN_PATH}
    for url, kind in what.items():
        outcome, reason = recorded[url]
        assert outcome == expected.get(kind, UrlOutcome.FORBIDDEN_PATH), (url, outcome, reason)
        if kind in ("outside", "device") and not allow_outside:  # refused before anything is opened
            assert "outside the corpus root" in reason and "corpus_allow_outside" in reason
        elif kind in ("device", "fifo", "folder"):
            assert reason.endswith("not a regular file") and {"device": "character device", "fifo": "FIFO",
                                                               "folder": "folder"}[kind] in reason
    assert stored == (5 if allow_outside else 2)
