"""The leak index kept on disk (explorer/crawl/leak_store.py): built once for a set of test
images, read back the same at the next start, never used for other images, rebuilt where the
stored file is damaged, and a directory that cannot be written costs only the build."""
import random

import numpy as np
import pytest

from explorer.crawl import decontam, leak_store
from explorer.crawl.decontam import LeakIndex, copy_hashes
from explorer.crawl.images import cheap_embedding, load_rgb
from explorer.sandbox.repost import repost
from explorer.sandbox.world import World

WORLD = World(0)
TARGET = "sandbox-flowers"


@pytest.fixture(scope="module")
def test_files(tmp_path_factory):
    """30 test images as files: past FLAT_INDEX_MAX views, so the stored index is inverted lists."""
    d = tmp_path_factory.mktemp("test-images")
    paths = []
    for y in range(10):
        for i in range(3):
            path = d / f"{y}-{i}.png"
            WORLD.target_image(TARGET, "test", y, i).save(path)
            paths.append(str(path))
    return paths


def built(paths, calls=None):
    def build():
        if calls is not None:
            calls.append(1)
        return LeakIndex.from_images((load_rgb(p) for p in paths), cheap_embedding)
    return build


def verdicts(leak: LeakIndex, paths) -> list:
    """The index's verdicts on re-posts of the test images and on other pictures."""
    rng = random.Random(2)
    ims = [repost(load_rgb(paths[i]), kind, random.Random(rng.random()))
           for i in range(0, len(paths), 4) for kind in ("crop", "flip", "grayscale", "rotate")]
    ims += [WORLD.target_image("sandbox-vehicles", "test", y, 0) for y in range(6)]   # (other pictures)
    return leak.match(np.stack([cheap_embedding(im) for im in ims]), [copy_hashes(im) for im in ims],
                      0.92, 230, 0.2)


def test_a_stored_index_is_read_back_whole_and_judges_as_the_built_one(test_files, tmp_path):
    import faiss

    calls = []
    first = leak_store.stored_leak_index(test_files, built(test_files, calls), tmp_path, hashes=True)
    again = leak_store.stored_leak_index(test_files, built(test_files, calls), tmp_path, hashes=True)
    assert calls == [1]                                   # built once, then read back
    assert len(list((tmp_path / leak_store.SUBDIR).glob("*.npz"))) == 1
    assert not list((tmp_path / leak_store.SUBDIR).glob("*.part"))
    assert type(again.hashes) is type(first.hashes) and isinstance(again.hashes, faiss.IndexBinaryIVF)
    assert again.hashes.nprobe == decontam.IVF_PROBE
    assert np.array_equal(decontam.index_codes(again.hashes), decontam.index_codes(first.hashes))
    assert np.array_equal(again.owners, first.owners) and again.views == first.views
    assert all(np.array_equal(a, b) for a, b in zip(again.greys, first.greys)) and len(again.greys) == 30
    assert all(np.array_equal(a, b) for a, b in zip(again.colours, first.colours)) and len(again.colours) == 30
    assert np.array_equal(again.embeddings, first.embeddings)
    said = verdicts(first, test_files)
    assert sum(v is not None for v in said) >= 25 and said[-6:] == [None] * 6   # (the check can fail)
    assert verdicts(again, test_files) == said


def test_other_images_other_settings_or_other_code_get_another_key(test_files, tmp_path, monkeypatch):
    key = leak_store.leak_key(test_files, True)
    assert leak_store.leak_key(list(test_files), True) == key
    assert leak_store.leak_key(test_files, False) != key
    assert leak_store.leak_key(test_files[::-1], True) != key
    assert leak_store.leak_key(test_files[:-1], True) != key
    changed = tmp_path / "changed.png"
    changed.write_bytes(open(test_files[0], "rb").read() + b"\0")
    assert leak_store.leak_key([str(changed)] + test_files[1:], True) != key
    monkeypatch.setattr(leak_store, "LAYOUT", leak_store.LAYOUT + 1)
    assert leak_store.leak_key(test_files, True) != key


def damaged_files(good: bytes):
    """What a stored file may have become: cut short, emptied, garbage, parts that disagree."""
    import io

    yield good[: len(good) // 2]
    yield b""
    yield b"PK\x03\x04" + bytes(range(256)) * 4
    with np.load(io.BytesIO(good)) as z:
        parts = {k: z[k] for k in z.files}
    for name, bad in (("owners", parts["owners"][:-1]), ("views", parts["views"][:, :5]),
                      ("owners", parts["owners"] + 1000), ("grey_pixels", parts["grey_pixels"][:-1]),
                      ("colour_shapes", parts["colour_shapes"][:, :2]),
                      ("hash_index", parts["hash_index"][:100])):
        buf = io.BytesIO()
        np.savez(buf, **{**parts, name: bad})
        yield buf.getvalue()


def test_a_damaged_stored_file_is_built_again_and_replaced(test_files, tmp_path):
    paths = test_files[:3]   # (a flat index: quick to build)
    leak_store.stored_leak_index(paths, built(paths), tmp_path, hashes=True)
    (stored,) = (tmp_path / leak_store.SUBDIR).glob("*.npz")
    good = stored.read_bytes()
    for damaged in damaged_files(good):
        stored.write_bytes(damaged)
        assert leak_store.load(stored) is None
        calls = []
        index = leak_store.stored_leak_index(paths, built(paths, calls), tmp_path, hashes=True)
        assert calls == [1] and index.hashes.ntotal == len(index.owners) > 0
        assert leak_store.load(stored) is not None    # (replaced by a whole one)


def test_a_directory_that_cannot_be_written_costs_only_the_build(test_files, tmp_path):
    paths = test_files[:2]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    calls = []
    for _ in range(2):
        index = leak_store.stored_leak_index(paths, built(paths, calls), blocked, hashes=True)
        assert index.hashes.ntotal == len(index.owners) > 0
    assert calls == [1, 1]


def test_an_index_without_copy_hashes_is_stored_too(test_files, tmp_path):
    paths = test_files[:4]

    def build():
        return LeakIndex.from_images((load_rgb(p) for p in paths), cheap_embedding, hashes=False)
    first = leak_store.stored_leak_index(paths, build, tmp_path, hashes=False)
    again = leak_store.stored_leak_index(paths, lambda: pytest.fail("built again"), tmp_path, hashes=False)
    assert again.hashes.ntotal == 0 and not again.views and not again.greys and not again.colours
    assert np.array_equal(again.embeddings, first.embeddings) and len(again) == 4
