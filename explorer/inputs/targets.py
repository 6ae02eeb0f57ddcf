"""Target tasks: the labelled (or unlabelled) images that `explore` learns for and is scored on.

`load_target(spec, data_root)` understands
- torchvision datasets by name: `flowers102`, `food101`, `oxford-pets` (alias `pets`), `dtd`,
  `cifar10`, `cifar100`. They are read from `data_root` in torchvision's own on-disk layout and
  downloaded by torchvision when `download=True` and the network allows.
- `folder:PATH`: `PATH/train/<class>/*` + `PATH/test/<class>/*` (labelled splits), or
  `PATH/<class>/*` (labelled, split 80/20 by a seeded hash of each file's relative path), or
  `PATH/*.jpg` (unlabelled: train only, label -1, no test).
- `sandbox-*` targets are written to a folder by the CLI first and then loaded as `folder:PATH`.

Split choices (the usual linear-probe protocol: fit on everything labelled, score on test):
flowers102 and dtd (partition 1) train on train+val and test on test; food101 train/test;
oxford-pets trainval/test with the 37 breed (category) labels; cifar train/test.

Every dataset yields `(PIL RGB image, int label)`; label -1 means unlabelled.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, is_image_file, make_dataset

from explorer.errors import UserError, first_line
from explorer.crawl.images import load_rgb

UNLABELLED = -1
FOLDER_TRAIN_SHARE = 0.8      # class-folder targets without train/test: this share goes to train
FOLDER_SPLIT_SEED = 0         # the hash split depends only on this and each file's relative path


class TargetError(UserError):
    """The user asked for a target that cannot be used as asked (one clear line)."""


class TargetUnavailable(TargetError):
    """The target's data is not on disk and could not be downloaded."""


class ImageFiles(Dataset):
    """Images stored as files, with one int label each (-1 = unlabelled), read as the crawl sees
    them (upright, transparency over white: explorer/crawl/images.py load_rgb)."""

    def __init__(self, paths: list[str], labels: list[int]):
        assert len(paths) == len(labels)
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return load_rgb(self.paths[i]), self.labels[i]


@dataclass
class Target:
    """A target task. `train`/`test` yield (PIL RGB image, label); `test` is None when unlabelled."""

    name: str
    train: Dataset
    test: Dataset | None
    classes: list[str]
    train_files: list[str] | None = field(default=None, repr=False)
    test_files: list[str] | None = field(default=None, repr=False)

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def train_paths(self) -> list[str] | None:
        """Paths of the train images in dataset order, or None if they are not files (cifar)."""
        return self.train_files

    def test_paths(self) -> list[str] | None:
        return self.test_files

    def materialise(self, directory: str | Path, split: str = "train") -> list[str]:
        """Image files of a split, in dataset order, for streaming by path.

        Files already on disk are returned as they are. In-memory images (cifar) are written
        once as PNGs to `directory/<name>/<split>/`, built in a temp folder and renamed into
        place when complete, so a killed run leaves no half-written split behind.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        paths = self.train_files if split == "train" else self.test_files
        if paths is not None:
            return paths
        dataset = self.train if split == "train" else self.test
        if dataset is None:
            raise TargetError(f"target {self.name} has no {split} split")
        out = Path(directory).expanduser() / slug(self.name) / split
        names = [f"{i:06d}.png" for i in range(len(dataset))]
        if not (out / ".complete").exists():
            tmp = out.with_name(split + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for i, fname in enumerate(names):
                image, _ = dataset[i]
                image.save(tmp / fname)
            (tmp / ".complete").write_text(f"{len(names)}\n")
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
        return [str(out / n) for n in names]


# ---------------------------------------------------------------------------------------------
# torchvision datasets

@dataclass(frozen=True)
class _Torchvision:
    folder: str                   # under data_root, where torchvision keeps it
    required: tuple[str, ...]     # inside `folder`: what must be there to read it offline
    build: Callable[[Path, bool], Target]
    contents: str = ""            # how the error message names `required`; "" = list them

    @property
    def layout(self) -> str:
        return f"{self.folder}/ ({self.contents or ', '.join(self.required)})"


def _files(ds: Dataset) -> list[str]:
    """File paths of a file-backed torchvision dataset, in index order."""
    files = getattr(ds, "_image_files", None)
    if files is None:
        files = ds._images  # OxfordIIITPet
    assert len(files) == len(ds)
    return [str(p) for p in files]


def _flowers102(root: Path, download: bool) -> Target:
    train = tvd.Flowers102(root, split="train", download=download)
    val = tvd.Flowers102(root, split="val")
    test = tvd.Flowers102(root, split="test")
    return Target("flowers102", ConcatDataset([train, val]), test, list(tvd.Flowers102.classes),
                  _files(train) + _files(val), _files(test))


def _food101(root: Path, download: bool) -> Target:
    train = tvd.Food101(root, split="train", download=download)
    test = tvd.Food101(root, split="test")
    _same_classes("food101", train.classes, test.classes)
    return Target("food101", train, test, list(train.classes), _files(train), _files(test))


def _oxford_pets(root: Path, download: bool) -> Target:
    train = tvd.OxfordIIITPet(root, split="trainval", target_types="category", download=download)
    test = tvd.OxfordIIITPet(root, split="test", target_types="category")
    return Target("oxford-pets", train, test, list(train.classes), _files(train), _files(test))


def _dtd(root: Path, download: bool) -> Target:
    train = tvd.DTD(root, split="train", partition=1, download=download)
    val = tvd.DTD(root, split="val", partition=1)
    test = tvd.DTD(root, split="test", partition=1)
    # DTD numbers classes per split file; they agree only if every split holds every class.
    _same_classes("dtd", train.classes, val.classes)
    _same_classes("dtd", train.classes, test.classes)
    return Target("dtd", ConcatDataset([train, val]), test, list(train.classes),
                  _files(train) + _files(val), _files(test))


def _cifar(cls: type, name: str) -> Callable[[Path, bool], Target]:
    def build(root: Path, download: bool) -> Target:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False)
        return Target(name, train, test, list(train.classes))  # in memory: no paths
    return build


def _same_classes(name: str, a: list[str], b: list[str]) -> None:
    if list(a) != list(b):
        raise TargetUnavailable(f"{name}: its splits list different classes; the copy on disk is incomplete")


TORCHVISION_TARGETS: dict[str, _Torchvision] = {
    "flowers102": _Torchvision("flowers-102", ("jpg/", "imagelabels.mat", "setid.mat"), _flowers102),
    "food101": _Torchvision("food-101", ("images/", "meta/"), _food101),
    "oxford-pets": _Torchvision("oxford-iiit-pet", ("images/", "annotations/"), _oxford_pets),
    "dtd": _Torchvision("dtd/dtd", ("images/", "labels/"), _dtd),
    "cifar10": _Torchvision("cifar-10-batches-py",
                            ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                             "data_batch_5", "test_batch", "batches.meta"),
                            _cifar(tvd.CIFAR10, "cifar10"), "data_batch_1..5, test_batch, batches.meta"),
    "cifar100": _Torchvision("cifar-100-python", ("train", "test", "meta"),
                             _cifar(tvd.CIFAR100, "cifar100")),
}
ALIASES = {"pets": "oxford-pets", "oxford-iiit-pet": "oxford-pets", "flowers": "flowers102",
           "food": "food101", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def _load_torchvision(name: str, root: Path, download: bool) -> Target:
    spec = TORCHVISION_TARGETS[name]
    base = root / spec.folder
    missing = [p for p in spec.required if not (base / p).exists()]
    how = f"pass --data-root DIR containing {spec.layout}, or run with network access to download it"
    if missing and not download:
        raise TargetUnavailable(f"{name} not found: no {base / missing[0]} (looked in data root {root}); {how}")
    try:
        return spec.build(root, bool(missing) and download)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise TargetUnavailable(f"{name} could not be downloaded into {root} ({reason}); {how}") from e
    except (RuntimeError, FileNotFoundError, KeyError, ValueError) as e:
        # torchvision's checksum/existence checks, or a split file that is missing
        raise TargetUnavailable(f"{name} under {base} is incomplete or corrupted ({e}); {how}") from e
    except OSError as e:  # e.g. data root not writable for the download
        raise TargetUnavailable(f"{name} could not be read or written under {root} ({e}); {how}") from e


# ---------------------------------------------------------------------------------------------
# folder:PATH

def _image_files(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.iterdir() if p.is_file() and is_image_file(p.name))


def _class_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _labelled_split(directory: Path, class_to_idx: dict[str, int]) -> ImageFiles:
    samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    return ImageFiles([p for p, _ in samples], [c for _, c in samples])


def _hash_share(relpath: str, seed: int) -> float:
    """A number in [0, 1) fixed by the file's relative path and the seed."""
    digest = hashlib.sha256(f"{seed}/{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _hash_split(root: Path, samples: ImageFiles, share: float, seed: int) -> tuple[ImageFiles, ImageFiles]:
    """Split by hash of relative path: stable when files are added, moved with their folder, or
    listed in another order. A class whose files all hash to test gives its lowest one to train."""
    keys = [_hash_share(Path(p).relative_to(root).as_posix(), seed) for p in samples.paths]
    in_train = [k < share for k in keys]
    for c in set(samples.labels):
        members = [i for i, label in enumerate(samples.labels) if label == c]
        if not any(in_train[i] for i in members):
            in_train[min(members, key=keys.__getitem__)] = True
    return _select(samples, in_train), _select(samples, [not t for t in in_train])


def _select(samples: ImageFiles, keep: list[bool]) -> ImageFiles:
    rows = [(p, y) for p, y, k in zip(samples.paths, samples.labels, keep) if k]
    return ImageFiles([p for p, _ in rows], [y for _, y in rows])


def _one_folder(directory: Path) -> tuple[list[str], ImageFiles]:
    """Classes and samples of a folder: class sub-folders, or loose images (unlabelled).
    Sub-folders that hold no image are not classes."""
    classes = _class_dirs(directory)
    loose = _image_files(directory)
    if classes and loose:
        raise TargetError(f"{directory} mixes loose images with sub-folders; put every image in a "
                          "class sub-folder (labelled) or none in sub-folders (unlabelled)")
    if not classes:
        return [], ImageFiles(loose, [UNLABELLED] * len(loose))
    samples = _labelled_split(directory, {c: i for i, c in enumerate(classes)})
    present = sorted({classes[y] for y in samples.labels})
    if not present:
        return [], ImageFiles([], [])
    if present != classes:
        samples = _labelled_split(directory, {c: i for i, c in enumerate(present)})
    return present, samples


def load_folder(path: str | Path, seed: int = FOLDER_SPLIT_SEED, name: str | None = None) -> Target:
    """A target from a folder of images (see the module docstring for the layouts).
    `name` defaults to `folder:ABSOLUTE_PATH`; the CLI names sandbox targets after themselves."""
    root = Path(path).expanduser().resolve()
    name = name or f"folder:{root}"
    if not root.is_dir():
        raise TargetUnavailable(f"{name}: no such folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, train = _one_folder(root / "train")
        if classes:
            extra = sorted(set(_class_dirs(root / "test")) - set(classes))
            if extra:
                raise TargetError(f"{name}: test/ has classes that train/ lacks: {', '.join(extra[:5])}")
            test = _labelled_split(root / "test", {c: i for i, c in enumerate(classes)})
        else:
            _, test = _one_folder(root / "test")
    else:
        classes, samples = _one_folder(root)
        if classes:
            train, test = _hash_split(root, samples, FOLDER_TRAIN_SHARE, seed)
        else:
            train, test = samples, None
    if len(train) == 0:
        raise TargetUnavailable(f"{name}: no images found (extensions {', '.join(IMG_EXTENSIONS)})")
    _require_readable(name, train.paths + (test.paths if test is not None else []))
    return Target(name, train, test, classes, train.paths, test.paths if test is not None else None)


def _require_readable(name: str, paths: list[str]) -> None:
    """Every image of a folder target decodes, or TargetError names the files that do not:
    found here, not as a traceback from a training thread halfway through a round."""
    bad = [(p, why) for p in paths if (why := unreadable(p)) is not None]
    if bad:
        listed = "; ".join(f"{p} ({why})" for p, why in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise TargetError(f"{name}: {len(bad)} unreadable image(s): {listed}{more}; remove or replace them")


def unreadable(path: str) -> str | None:
    """Why Pillow cannot decode the image file at `path`, or None when it can."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))   # JPEG: a scaled-down decode still reads the whole file
            im.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        return first_line(e)
    return None


# ---------------------------------------------------------------------------------------------

def load_target(spec: str, data_root: str | Path, download: bool = False) -> Target:
    """The target named by `spec`: a torchvision dataset name, or `folder:PATH`.

    Raises TargetUnavailable (one line: which dataset, where it looked, how to get it) when the
    data is not on disk and `download` is False or the download fails; TargetError for a name
    it does not know.
    """
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):])
    if spec.startswith("sandbox-"):
        raise TargetError(f"{spec} is a sandbox target: it is built by the CLI (`explore run --target "
                          f"{spec}` writes it to a folder and loads it as folder:PATH)")
    name = ALIASES.get(spec.lower(), spec.lower())
    if name not in TORCHVISION_TARGETS:
        known = ", ".join([*TORCHVISION_TARGETS, "folder:PATH", "sandbox-*"])
        raise TargetError(f"unknown target {spec!r}; known: {known}")
    return _load_torchvision(name, Path(data_root).expanduser(), download)


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of a target name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[-60:]
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
