"""The Fashion-MNIST check's converter (explorer/inputs/fashion_mnist.py), on small IDX files written
here (gzipped, as Debian ships them): the target it writes loads as a folder target, the corpus
lists with the captions it meant, and a bad IDX file is one clear error, never a traceback."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from explorer.config import CrawlConfig
from explorer.engines.corpus import CorpusEngine
from explorer.inputs.fashion_mnist import (CLASSES, DISTRACTORS, NOISE_WORDS, SPLIT_FILES, BuildSpec,
                                    FashionBuildError, IdxError, build, folder_name, load_split,
                                    main, parse_classes, read_idx)
from explorer.crawl.images import Rejection, prepare
from explorer.inputs.targets import load_folder
from explorer.inputs.vocab import file_concepts

PER_CLASS = {"train": 7, "test": 3}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Both splits, PER_CLASS images of each class, each image a distinct random 28x28 picture."""
    root = tmp_path_factory.mktemp("fashion-idx")
    rng = np.random.default_rng(7)
    for split, (images_stem, labels_stem) in SPLIT_FILES.items():
        labels = np.repeat(np.arange(len(CLASSES)), PER_CLASS[split])
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(root / f"{images_stem}.gz", images)
        write_idx(root / f"{labels_stem}.gz", labels.astype(np.uint8))
    return root


SPEC = BuildSpec(target_classes=(0, 7, 9), train_per_class=4, test_per_class=2,
                 corpus_per_class=3, size=40, seed=3, noise_words=(1, 3))


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    return build(source, tmp_path_factory.mktemp("out") / "fashion", SPEC)


def test_target_loads_as_a_labelled_folder_target(built):
    target = load_folder(built.target)
    assert target.classes == sorted(folder_name(c) for c in SPEC.target_classes)
    assert "T-shirt-top" in target.classes          # the slash of "T-shirt/top" is no sub-folder
    assert len(target.train) == 3 * 4 and len(target.test) == 3 * 2
    image, label = target.train[0]
    assert image.mode == "RGB" and image.size == (40, 40) and label in range(3)
    assert all("/test/" in p for p in target.test_files)
    assert built.target_names == ["T-shirt/top", "Sneaker", "Ankle boot"]


def test_corpus_lists_every_class_with_its_name_among_noise_words(built):
    items = CorpusEngine(str(built.corpus), CrawlConfig()).items
    assert len(items) == len(CLASSES) * 3
    seen = []
    for item in items:
        c = built.class_of_url(item.image)
        assert c is not None
        seen.append(c)
        name = CLASSES[c].lower()
        assert name in item.caption
        noise = item.caption.replace(name, " ")
        count = sum(noise.count(w) for w in NOISE_WORDS if " " in w)
        noise_left = noise
        for w in NOISE_WORDS:
            if " " in w:
                noise_left = noise_left.replace(w, " ")
        count += len(noise_left.split())
        assert 1 <= count <= 3 and all(w in NOISE_WORDS for w in noise_left.split())
    assert sorted(seen) == sorted(list(range(len(CLASSES))) * 3)
    # file names give nothing away: numbered in a shuffled order
    assert all(Path(item.image).name[:6].isdigit() for item in items)


def test_corpus_images_pass_the_crawl_and_are_none_of_the_target(built):
    cfg = CrawlConfig()
    for path in sorted(built.corpus.glob("*.png"))[:5]:
        assert not isinstance(prepare(path.read_bytes(), cfg), Rejection)
    target_bytes = {p.read_bytes() for p in built.target.rglob("*.png")}
    assert not target_bytes & {p.read_bytes() for p in built.corpus.glob("*.png")}


def test_vocabulary_holds_the_class_names_and_distractors(built):
    concepts = file_concepts(built.vocab)
    assert concepts == [*CLASSES, *DISTRACTORS]
    assert not {w.casefold() for w in NOISE_WORDS} & {c.casefold() for c in concepts}


def test_same_seed_same_build_and_a_finished_build_is_reused(source, built, tmp_path):
    again = build(source, tmp_path / "again", SPEC)
    assert (again.corpus / "captions.jsonl").read_text() == (built.corpus / "captions.jsonl").read_text()
    assert again.corpus_classes == built.corpus_classes
    stamp = (again.root / "manifest.json").stat().st_mtime_ns
    assert build(source, tmp_path / "again", SPEC).corpus_classes == again.corpus_classes
    assert (again.root / "manifest.json").stat().st_mtime_ns == stamp
    other = build(source, tmp_path / "again", BuildSpec(target_classes=(1, 2), train_per_class=2,
                                                        test_per_class=1, corpus_per_class=1, size=32))
    assert sorted(p.name for p in (other.target / "train").iterdir()) == ["Pullover", "Trouser"]
    assert len(other.corpus_classes) == len(CLASSES)


def test_mislabelled_captions_name_another_class(source, tmp_path):
    spec = BuildSpec(target_classes=(0, 1), train_per_class=1, test_per_class=1,
                     corpus_per_class=5, size=32, mislabel_share=1.0)
    done = build(source, tmp_path / "mislabelled", spec)
    for line in (done.corpus / "captions.jsonl").read_text().splitlines():
        entry = json.loads(line)
        named = [c for c in CLASSES if f" {c.lower()} " in f" {entry['caption']} "]
        assert len(named) == 1 and named[0] != CLASSES[done.corpus_classes[entry["file"]]]


def test_a_foreign_folder_is_not_overwritten(source, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FashionBuildError, match="not an earlier Fashion-MNIST build"):
        build(source, tmp_path / "mine", SPEC)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_settings_are_one_line_errors(source, tmp_path):
    with pytest.raises(FashionBuildError, match="has 7 images in the train split"):
        build(source, tmp_path / "x", BuildSpec(target_classes=(0, 1), train_per_class=5,
                                                corpus_per_class=5, size=32))
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()
    with pytest.raises(FashionBuildError, match="unknown Fashion-MNIST class 'hat'"):
        parse_classes("Coat,hat")
    assert parse_classes(" ankle  boot,t-shirt/top") == (0, 9)
    for bad in (BuildSpec(size=28), BuildSpec(target_classes=(3,)), BuildSpec(noise_words=(3, 2)),
                BuildSpec(corpus_per_class=0), BuildSpec(mislabel_share=1.5)):
        with pytest.raises(FashionBuildError):
            bad.check()


def test_idx_read_plain_and_gzipped(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (True, False):
        got = read_idx(write_idx(tmp_path / f"a{gz}", array, gz=gz), 3)
        assert got.shape == (2, 3, 4) and np.array_equal(got, array)


@pytest.mark.parametrize("damage, message", [
    (lambda b: gzip.compress(b)[:-30], "cut short"),                       # truncated download
    (lambda b: gzip.compress(b[:-5]), "cut short: 51 bytes for shape"),    # header says more
    (lambda b: gzip.compress(b + b"xx"), "longer than its header says"),
    (lambda b: b"\x1f\x8b" + bytes(range(60)), "not a valid gzip file"),
    (lambda b: b"<html>not found</html>", "not an IDX file"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "IDX type 0x0d"),                  # floats
    (lambda b: b[:3] + b"\x01" + b[4:], r"1 dimension\(s\), expected 3"),
    (lambda b: b[:6], "too short|cut short"),
    (lambda b: b"", "too short for an IDX header"),
])
def test_a_damaged_idx_file_is_one_clear_error(tmp_path, damage, message):
    good = idx_bytes(np.zeros((2, 2, 10), dtype=np.uint8) + 5)
    path = tmp_path / "images.gz"
    path.write_bytes(damage(good))
    with pytest.raises(IdxError, match=message) as e:
        read_idx(path, 3)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_split_files_must_agree(tmp_path):
    images_stem, labels_stem = SPLIT_FILES["test"]
    write_idx(tmp_path / f"{images_stem}.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / labels_stem, np.zeros(3, dtype=np.uint8), gz=False)   # plain works too
    with pytest.raises(IdxError, match="holds 4 images but .* 3 labels"):
        load_split(tmp_path, "test")
    write_idx(tmp_path / labels_stem, np.array([0, 1, 2, 12], dtype=np.uint8), gz=False)
    with pytest.raises(IdxError, match="label 12"):
        load_split(tmp_path, "test")
    with pytest.raises(IdxError, match="no train-images-idx3-ubyte.gz or train-images-idx3-ubyte"):
        load_split(tmp_path, "train")


def test_the_command_says_one_line_for_a_bad_file(source, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for stem in (*SPLIT_FILES["train"], *SPLIT_FILES["test"]):
        data = (source / f"{stem}.gz").read_bytes()
        (broken / f"{stem}.gz").write_bytes(data[: len(data) // 2])
    assert main([str(tmp_path / "out"), "--source", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main([str(tmp_path / "out2"), "--source", str(source), "--target-classes", "Bag,Coat",
                 "--train-per-class", "2", "--test-per-class", "1", "--corpus-per-class", "2",
                 "--size", "32"]) == 0
    assert "--engine corpus:" in capsys.readouterr().out
