"""Each target loader reads tiny data written in that dataset's real on-disk layout.

torchvision checks the md5 of Flowers-102's .mat files and of every CIFAR batch even when it
does not download; synthetic files cannot match those sums, so the `no_md5` fixture makes
torchvision's `check_integrity` check existence only (the rest of torchvision's code runs as is).
A separate test shows what the loader says when the sums do not match.
"""
from __future__ import annotations

import json
import os
import pickle
import socket

import numpy as np
import pytest
import scipy.io
from PIL import Image

from explorer.inputs.targets import FOLDER_SPLIT_SEED, Target, TargetError, TargetUnavailable, _hash_share, load_folder, load_target

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 210, 30)]


def write_jpg(path, colour=(128, 128, 128), size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


@pytest.fixture
def no_md5(monkeypatch):
    def exists_only(fpath, md5=None):
        return os.path.isfile(fpath)
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.flowers102 as flowers102
    monkeypatch.setattr(flowers102, "check_integrity", exists_only)
    monkeypatch.setattr(cifar, "check_integrity", exists_only)


def assert_target(t: Target, n_train, n_test, classes):
    assert (len(t.train), len(t.test)) == (n_train, n_test)
    assert t.classes == classes
    for ds in (t.train, t.test):
        for i in range(len(ds)):
            image, label = ds[i]
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert isinstance(label, int) and 0 <= label < len(classes)


def assert_paths_match(ds, paths, root):
    """Paths are real files, in dataset order: the image at a path is the dataset's image."""
    assert len(paths) == len(ds)
    for i, p in enumerate(paths):
        assert p.startswith(str(root)) and os.path.isfile(p)
        assert np.array_equal(np.asarray(Image.open(p).convert("RGB")), np.asarray(ds[i][0]))


# ---------------------------------------------------------------- torchvision datasets

def write_flowers(root):
    base = root / "flowers-102"
    labels = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]          # 1-based, as in imagelabels.mat
    for i, c in enumerate(labels, 1):
        write_jpg(base / "jpg" / f"image_{i:05d}.jpg", COLOURS[c - 1])
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([[1, 2]], dtype=np.uint16),
                                          "valid": np.array([[3, 4]], dtype=np.uint16),
                                          "tstid": np.array([[5, 6, 7, 8, 9, 10]], dtype=np.uint16)})


def test_flowers102_reads_real_layout_train_plus_val(tmp_path, no_md5):
    write_flowers(tmp_path)
    t = load_target("flowers102", tmp_path)
    assert_target(t, 4, 6, t.classes)
    assert len(t.classes) == 102 and t.classes[0] == "pink primrose"
    assert [t.train[i][1] for i in range(4)] == [0, 1, 0, 1]     # trnid then valid, 0-based
    assert [os.path.basename(p) for p in t.train_paths()] == [f"image_{i:05d}.jpg" for i in (1, 2, 3, 4)]
    assert_paths_match(t.train, t.train_paths(), tmp_path)
    assert_paths_match(t.test, t.test_paths(), tmp_path)


def test_flowers102_with_wrong_checksums_is_unavailable(tmp_path):
    write_flowers(tmp_path)
    with pytest.raises(TargetUnavailable, match="flowers102 under .* is incomplete or corrupted"):
        load_target("flowers102", tmp_path)


def test_food101_reads_real_layout(tmp_path):
    base = tmp_path / "food-101"
    split = {"train": {"apple_pie": ["apple_pie/101", "apple_pie/102"], "sushi": ["sushi/201", "sushi/202"]},
             "test": {"apple_pie": ["apple_pie/103"], "sushi": ["sushi/203"]}}
    for name, meta in split.items():
        for c, items in meta.items():
            for item in items:
                write_jpg(base / "images" / f"{item}.jpg", COLOURS[c == "sushi"])
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{name}.json").write_text(json.dumps(meta))
        (base / "meta" / f"{name}.txt").write_text("".join(f"{i}\n" for v in meta.values() for i in v))
    (base / "meta" / "classes.txt").write_text("apple_pie\nsushi\n")
    t = load_target("food101", tmp_path)
    assert_target(t, 4, 2, ["apple_pie", "sushi"])
    assert sorted(t.train[i][1] for i in range(4)) == [0, 0, 1, 1]
    assert_paths_match(t.train, t.train_paths(), tmp_path)


def test_oxford_pets_reads_real_layout_with_breed_labels(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    # annotations/*.txt: image id, class id (1..37), species (1 cat, 2 dog), breed id
    rows = {"trainval": [("Abyssinian_1", 1, 1, 1), ("Abyssinian_2", 1, 1, 1),
                         ("american_bulldog_1", 2, 2, 1), ("american_bulldog_2", 2, 2, 1)],
            "test": [("Abyssinian_3", 1, 1, 1), ("american_bulldog_3", 2, 2, 1)]}
    for split, items in rows.items():
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in items))
        for image_id, cls, _, _ in items:
            write_jpg(base / "images" / f"{image_id}.jpg", COLOURS[cls - 1])
            (base / "annotations" / "trimaps").mkdir(exist_ok=True)
            Image.new("L", (12, 10), 1).save(base / "annotations" / "trimaps" / f"{image_id}.png")
    t = load_target("pets", tmp_path)
    assert t.name == "oxford-pets"
    assert_target(t, 4, 2, ["Abyssinian", "American Bulldog"])
    assert [t.test[i][1] for i in range(2)] == [0, 1]
    assert_paths_match(t.test, t.test_paths(), tmp_path)


def test_dtd_reads_real_layout_train_plus_val(tmp_path):
    data = tmp_path / "dtd" / "dtd"
    splits = {"train1": ["banded/banded_0001.jpg", "zigzagged/zigzagged_0001.jpg"],
              "val1": ["banded/banded_0002.jpg", "zigzagged/zigzagged_0002.jpg"],
              "test1": ["banded/banded_0003.jpg", "zigzagged/zigzagged_0003.jpg"]}
    for split, items in splits.items():
        for item in items:
            write_jpg(data / "images" / item, COLOURS[item.startswith("zig")])
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}.txt").write_text("".join(f"{i}\n" for i in items))
    t = load_target("dtd", tmp_path)
    assert_target(t, 4, 2, ["banded", "zigzagged"])
    assert [t.train[i][1] for i in range(4)] == [0, 1, 0, 1]
    assert_paths_match(t.train, t.train_paths(), tmp_path)


def write_cifar_batch(path, n, label_key, labels, seed):
    rng = np.random.default_rng(seed)
    entry = {"batch_label": path.name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: labels, "filenames": [f"img_{i}.png" for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    return entry["data"]


def test_cifar10_reads_real_layout_and_materialises_pngs(tmp_path, no_md5):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for b in range(1, 6):
        first = write_cifar_batch(base / f"data_batch_{b}", 2, "labels", [0, 1], seed=b)
    write_cifar_batch(base / "test_batch", 3, "labels", [2, 1, 0], seed=9)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": 2, "num_vis": 3072}, f)
    t = load_target("cifar10", tmp_path)
    assert_target(t, 10, 3, names)
    assert t.train_paths() is None and t.test_paths() is None
    # data rows are channel-planar (R plane, G plane, B plane), decoded to HWC by torchvision
    assert np.array_equal(np.asarray(t.train[8][0]), first[0].reshape(3, 32, 32).transpose(1, 2, 0))

    out = tmp_path / "materialised"
    paths = t.materialise(out)
    assert len(paths) == 10 and all(p.endswith(".png") for p in paths)
    assert_paths_match(t.train, paths, out)
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    assert t.materialise(out) == paths                                  # written once
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes
    assert_paths_match(t.test, t.materialise(out, "test"), out)


def test_cifar100_reads_real_layout_fine_labels(tmp_path, no_md5):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    write_cifar_batch(base / "train", 4, "fine_labels", [0, 1, 2, 99], seed=1)
    write_cifar_batch(base / "test", 2, "fine_labels", [99, 0], seed=2)
    fine = [f"class_{i}" for i in range(100)]
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": [f"super_{i}" for i in range(20)]}, f)
    t = load_target("cifar100", tmp_path)
    assert_target(t, 4, 2, fine)
    assert [t.test[i][1] for i in range(2)] == [99, 0]


# ---------------------------------------------------------------- missing data

@pytest.mark.parametrize("name, folder", [("flowers102", "flowers-102"), ("food101", "food-101"),
                                          ("oxford-pets", "oxford-iiit-pet"), ("dtd", "dtd/dtd"),
                                          ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, name, folder):
    with pytest.raises(TargetUnavailable) as err:
        load_target(name, tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    assert name in message and str(tmp_path) in message
    assert f"--data-root DIR containing {folder}/" in message and "network access" in message


def test_flowers_missing_message_names_the_layout(tmp_path):
    with pytest.raises(TargetUnavailable, match=r"flowers-102/ \(jpg/, imagelabels.mat, setid.mat\)"):
        load_target("flowers102", tmp_path)


def test_download_without_network_is_unavailable_not_a_traceback(tmp_path, monkeypatch):
    """With DNS and connect refused in-process, torchvision's download fails and we say so."""
    def refuse(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "network disabled in this test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(TargetUnavailable, match="flowers102 could not be downloaded into .*network disabled"):
        load_target("flowers102", tmp_path, download=True)


def test_unknown_and_sandbox_names_are_clear_errors(tmp_path):
    with pytest.raises(TargetError, match="unknown target 'imagenet'; known: flowers102"):
        load_target("imagenet", tmp_path)
    with pytest.raises(TargetError, match="sandbox target: it is built by the CLI"):
        load_target("sandbox-flowers", tmp_path)


# ---------------------------------------------------------------- folder:PATH

def test_folder_with_train_and_test_class_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, colour in (("cat", COLOURS[0]), ("dog", COLOURS[1])):
            for i in range(n):
                write_jpg(tmp_path / split / c / f"{i}.jpg", colour)
    (tmp_path / "test" / "dog" / "1.jpg").unlink()
    t = load_target(f"folder:{tmp_path}", "unused")
    assert_target(t, 6, 3, ["cat", "dog"])
    assert [t.test[i][1] for i in range(3)] == [0, 0, 1]
    assert_paths_match(t.train, t.train_paths(), tmp_path / "train")


def test_folder_test_class_missing_from_train_is_an_error(tmp_path):
    write_jpg(tmp_path / "train" / "cat" / "0.jpg")
    write_jpg(tmp_path / "test" / "cat" / "0.jpg")
    write_jpg(tmp_path / "test" / "emu" / "0.jpg")
    with pytest.raises(TargetError, match="test/ has classes that train/ lacks: emu"):
        load_target(f"folder:{tmp_path}", "unused")


def test_folder_of_class_folders_splits_by_path_hash(tmp_path):
    for c in ("a", "b", "c"):
        for i in range(20):
            write_jpg(tmp_path / c / f"{i:02d}.jpg")
    (tmp_path / "empty_dir").mkdir()
    t1 = load_target(f"folder:{tmp_path}", "unused")
    assert t1.classes == ["a", "b", "c"]
    train, test = set(t1.train_paths()), set(t1.test_paths())
    assert not train & test and len(train | test) == 60
    assert 36 <= len(train) <= 56                          # ~80% of 60
    for c in range(3):                                      # every class on both sides
        assert c in t1.train.labels and c in t1.test.labels
    # the split is a function of the relative path: the same after a move, and when files are added
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    os.rename(tmp_path, moved)
    write_jpg(moved / "a" / "new.jpg")
    t2 = load_target(f"folder:{moved}", "unused")
    rel = lambda paths, root: {os.path.relpath(p, root) for p in paths}  # noqa: E731
    assert rel(t2.train_paths(), moved) - {os.path.join("a", "new.jpg")} == rel(train, tmp_path)


def test_folder_class_with_one_image_keeps_it_in_train(tmp_path):
    for i in range(5):
        write_jpg(tmp_path / "many" / f"{i}.jpg")
    # a name whose hash sends it to test, so the fallback is what puts it in train
    name = next(f"{i}.jpg" for i in range(100) if _hash_share(f"single/{i}.jpg", FOLDER_SPLIT_SEED) >= 0.8)
    write_jpg(tmp_path / "single" / name)
    t = load_target(f"folder:{tmp_path}", "unused")
    assert t.classes == ["many", "single"] and 1 in t.train.labels and 1 not in t.test.labels


def test_folder_of_loose_images_is_unlabelled(tmp_path):
    for i in range(3):
        write_jpg(tmp_path / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    t = load_target(f"folder:{tmp_path}", "unused")
    assert not t.labelled and t.classes == [] and t.test is None and t.test_paths() is None
    assert len(t.train) == 3 and all(t.train[i][1] == -1 for i in range(3))
    assert t.materialise(tmp_path / "out") == t.train_paths()
    assert load_folder(tmp_path, name="sandbox-flowers").name == "sandbox-flowers"


def test_folder_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(TargetUnavailable, match="no such folder"):
        load_target(f"folder:{tmp_path / 'nope'}", "unused")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetUnavailable, match="no images found"):
        load_target(f"folder:{tmp_path / 'empty'}", "unused")
    write_jpg(tmp_path / "mixed" / "loose.jpg")
    write_jpg(tmp_path / "mixed" / "cls" / "x.jpg")
    with pytest.raises(TargetError, match="mixes loose images with sub-folders"):
        load_target(f"folder:{tmp_path / 'mixed'}", "unused")


def test_sandbox_test_split_size_is_configurable_and_kept_apart(tmp_path):
    from explorer.run.assemble import resolve_target
    from explorer.config import Config, apply_overrides

    base = ["run.target=sandbox-birds", f"run.data_root={tmp_path}"]
    default = resolve_target(apply_overrides(Config(), base))
    bigger = resolve_target(apply_overrides(Config(), base + ["sandbox.test_per_class=3"]))
    assert len(default.test) == 10 * 20 and len(bigger.test) == 10 * 3
    assert len(default.train) == len(bigger.train) == 10 * 30
    # each size has its own folder: neither run rewrites the other's files
    assert len(resolve_target(apply_overrides(Config(), base)).test) == 10 * 20
