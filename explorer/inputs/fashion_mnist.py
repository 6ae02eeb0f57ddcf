"""A real-image check that installs offline: Fashion-MNIST as a target and a captioned corpus.

Debian's `dataset-fashion-mnist` puts the four IDX files of Fashion-MNIST (70,000 28x28 grey
product photos, 10 classes) under /usr/share/datasets/fashion-mnist, gzipped. `build` turns them
into what a run takes:

- `OUT/target/{train,test}/<class>/*.png`: a labelled `folder:` target (explorer/inputs/targets.py) of
  some of the classes; train images from Fashion-MNIST's train split, test images from its
  test split.
- `OUT/corpus/`: a folder for `--engine corpus:OUT/corpus` (explorer/engines/corpus.py) holding
  other train-split images of all ten classes, so that the target's classes can be found in it
  and the rest are distractors. Files are numbered in a shuffled order (a name gives nothing
  away); each one's caption, in `corpus/captions.jsonl`, is its class name among random noise
  words ("ankle boot cheap leather shop"), optionally a wrong class name for a share of them.
- `OUT/vocab.txt`: the ten class names and distractor concepts, for `--vocab file:OUT/vocab.txt`.
- `OUT/manifest.json`: the build's settings and each corpus file's true class, which a run never
  sees and a benchmark scores it with (`Built.class_of_url`).

Images are upscaled (bicubic) to `size` pixels a side: the crawl rejects originals under
`crawl.min_side` (32). Everything is fixed by the seed. A missing, truncated or malformed IDX
file is an `IdxError`: one line naming the file and what is wrong.

    python -m explorer.inputs.fashion_mnist OUT [--target-classes "Pullover,Coat,Shirt"] [--corpus-per-class 60]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from explorer.errors import UserError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_UBYTE = 0x08              # the IDX type code of unsigned bytes, the only one Fashion-MNIST uses
MAX_IDX_BYTES = 256 << 20     # the train images are 47 MB; a larger file is not Fashion-MNIST
MAX_SIDE = 1024               # upscaled images: a larger side only costs disk

# Words a shop's caption carries beside what the thing is; none names a class or a distractor.
NOISE_WORDS = (
    "cheap", "sale", "new", "women", "men", "kids", "cotton", "leather", "black", "white",
    "grey", "classic", "summer", "winter", "casual", "style", "fashion", "brand", "online",
    "shop", "store", "discount", "size", "photo", "product", "catalog", "trendy", "vintage",
    "comfortable", "best", "price", "outlet", "collection", "original", "designer", "look",
    "buy", "gift", "season", "free shipping",
)
# Concepts the policy may ask besides the class names: things of the same shops, and things of
# none; a corpus search for any of them still answers with its nearest captions.
DISTRACTORS = (
    "hat", "scarf", "glove", "sock", "belt", "necklace", "sunglasses", "wallet", "umbrella",
    "wristwatch", "car", "dog", "apple", "guitar", "mountain", "bicycle", "chair", "pizza",
    "tree", "boat", "cat", "clock", "flower", "house", "laptop", "bird", "lamp", "cup", "book",
    "football",
)


class IdxError(UserError):
    """An IDX file that is missing, truncated or not what Fashion-MNIST's files are."""


class FashionBuildError(UserError):
    """Settings or an output folder that a Fashion-MNIST check cannot be built with."""


# ---------------------------------------------------------------------------------------------
# IDX files

def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by its magic, not its name), at most
    MAX_IDX_BYTES."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as z:
                    data = z.read(MAX_IDX_BYTES + 1)
            else:
                data = f.read(MAX_IDX_BYTES + 1)
    except FileNotFoundError:
        raise IdxError(f"{path}: no such file (sudo apt-get install dataset-fashion-mnist "
                       f"puts the IDX files under {DEFAULT_SOURCE})") from None
    except EOFError:
        raise IdxError(f"{path}: the gzip stream is cut short (a truncated download?)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise IdxError(f"{path}: not a valid gzip file ({e})") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_IDX_BYTES:
        raise IdxError(f"{path}: larger than {MAX_IDX_BYTES >> 20} MiB; not a Fashion-MNIST IDX file")
    return data


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (3: images, 1: labels) as a uint8
    array of its declared shape. Header, dimensions and length are checked against each other."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, kind, dims = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise IdxError(f"{path}: not an IDX file (its first bytes are {data[:4].hex()}, "
                       f"an IDX file's start with 0000)")
    if kind != IDX_UBYTE:
        raise IdxError(f"{path}: IDX type 0x{kind:02x}, expected 0x08 (unsigned bytes)")
    if dims != ndim:
        raise IdxError(f"{path}: {dims} dimension(s), expected {ndim} "
                       f"({'images' if ndim == 3 else 'labels'})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: the header is cut short ({len(data)} of {header} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if any(n == 0 for n in shape):
        raise IdxError(f"{path}: an empty dimension in its shape {shape}")
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        cut = "cut short" if len(data) < expected else "longer than its header says"
        raise IdxError(f"{path}: {cut}: {len(data)} bytes for shape {shape}, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def idx_file(source: str | Path, stem: str) -> Path:
    """`source/stem.gz` or `source/stem`, whichever exists (the gzipped one first)."""
    source = Path(source)
    for name in (stem + ".gz", stem):
        if (source / name).is_file():
            return source / name
    raise IdxError(f"{source}: no {stem}.gz or {stem} (sudo apt-get install dataset-fashion-mnist "
                   f"puts them under {DEFAULT_SOURCE})")


def load_split(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels uint8 [N]) of Fashion-MNIST's "train" or "test" split."""
    images_stem, labels_stem = SPLIT_FILES[split]
    images_path, labels_path = idx_file(source, images_stem), idx_file(source, labels_stem)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise IdxError(f"{images_path} holds {len(images)} images but {labels_path} "
                       f"{len(labels)} labels")
    if int(labels.max()) >= len(CLASSES):
        raise IdxError(f"{labels_path}: label {int(labels.max())}; Fashion-MNIST's are 0-{len(CLASSES) - 1}")
    return images, labels


# ---------------------------------------------------------------------------------------------
# classes and captions

def class_index(name: str) -> int:
    """The index of a class named as in CLASSES (case and spaces ignored)."""
    key = " ".join(name.split()).casefold()
    for i, c in enumerate(CLASSES):
        if c.casefold() == key:
            return i
    raise FashionBuildError(f"unknown Fashion-MNIST class {name!r}; have {', '.join(CLASSES)}")


def parse_classes(text: str) -> tuple[int, ...]:
    """Comma-separated class names -> their indices, in CLASSES order, without repeats."""
    names = [part for part in text.split(",") if part.strip()]
    if not names:
        raise FashionBuildError("no target classes given")
    return tuple(sorted({class_index(n) for n in names}))


def folder_name(c: int) -> str:
    """A class's folder in the target: its name with the slash of "T-shirt/top" made a dash."""
    return CLASSES[c].replace("/", "-")


def caption(c: int, rng: np.random.Generator, noise: tuple[int, int]) -> str:
    """The class name, lower case, at a random place among `noise` (min, max) random noise words."""
    words = list(rng.choice(NOISE_WORDS, size=int(rng.integers(noise[0], noise[1] + 1)), replace=False))
    words.insert(int(rng.integers(0, len(words) + 1)), CLASSES[c].lower())
    return " ".join(words)


def vocabulary() -> list[str]:
    """The concepts of the check: the ten class names, then the distractors."""
    return [*CLASSES, *DISTRACTORS]


# ---------------------------------------------------------------------------------------------
# building

@dataclass(frozen=True)
class BuildSpec:
    target_classes: tuple[int, ...] = (0, 2, 4, 6)   # T-shirt/top, Pullover, Coat, Shirt
    train_per_class: int = 100      # target train images per target class (Fashion-MNIST train)
    test_per_class: int = 50        # target test images per target class (Fashion-MNIST test)
    corpus_per_class: int = 100     # corpus images per class, all ten (train, none in the target)
    size: int = 64                  # side of the written images
    seed: int = 0
    noise_words: tuple[int, int] = (2, 4)  # noise words per caption, at least and at most
    mislabel_share: float = 0.0     # share of corpus captions that name another class

    def check(self) -> None:
        if not self.target_classes or any(not 0 <= c < len(CLASSES) for c in self.target_classes):
            raise FashionBuildError(f"target classes must be some of 0-{len(CLASSES) - 1}, "
                                    f"not {self.target_classes}")
        if len(self.target_classes) < 2:
            raise FashionBuildError("a labelled target needs at least 2 classes")
        for name in ("train_per_class", "test_per_class", "corpus_per_class"):
            if getattr(self, name) < 1:
                raise FashionBuildError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not 32 <= self.size <= MAX_SIDE:
            raise FashionBuildError(f"size must be 32-{MAX_SIDE} (the crawl rejects images under "
                                    f"32 px), not {self.size}")
        low, high = self.noise_words
        if not 0 <= low <= high <= len(NOISE_WORDS):
            raise FashionBuildError(f"noise words must be 0 <= min <= max <= {len(NOISE_WORDS)}, "
                                    f"not {self.noise_words}")
        if not 0.0 <= self.mislabel_share <= 1.0:
            raise FashionBuildError(f"mislabel share must be within 0-1, not {self.mislabel_share}")


@dataclass
class Built:
    """A built check: its folders and files, and each corpus file's true class."""

    root: Path
    spec: BuildSpec
    corpus_classes: dict[str, int] = field(repr=False)   # corpus-relative path -> class
    source: str = ""                                     # the folder of the IDX files it came from

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab.txt"

    @property
    def target_names(self) -> list[str]:
        return [CLASSES[c] for c in self.spec.target_classes]

    def class_of_url(self, url: str) -> int | None:
        """The true class of a corpus image from its file:// URL (as the crawl records it), or
        None for a URL outside the corpus."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            return None
        try:
            rel = Path(unquote(parts.path)).resolve().relative_to(self.corpus.resolve())
        except ValueError:
            return None
        return self.corpus_classes.get(rel.as_posix())


MANIFEST = "manifest.json"


def _spec_json(spec: BuildSpec) -> dict:
    return json.loads(json.dumps(asdict(spec)))   # tuples as lists, as they come back from a file


def load_built(root: str | Path) -> Built | None:
    """A finished build at `root`, or None when there is none (or an unreadable manifest)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        fields = manifest["spec"]
        spec = BuildSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        return Built(root, spec, {str(k): int(v) for k, v in manifest["corpus"].items()},
                     str(manifest.get("source", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _pick(labels: np.ndarray, c: int, counts: list[int], rng: np.random.Generator,
          split: str) -> list[np.ndarray]:
    """Disjoint random index sets of class `c`, one per count."""
    members = np.flatnonzero(labels == c)
    need = sum(counts)
    if len(members) < need:
        raise FashionBuildError(f"class {CLASSES[c]} has {len(members)} images in the {split} split; "
                                f"{need} were asked for")
    members = rng.permutation(members)
    out, start = [], 0
    for n in counts:
        out.append(np.sort(members[start:start + n]))
        start += n
    return out


def _save(pixels: np.ndarray, path: Path, size: int) -> None:
    im = Image.fromarray(np.ascontiguousarray(pixels), mode="L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    im.save(path, format="PNG")


def build(source: str | Path, out: str | Path, spec: BuildSpec = BuildSpec()) -> Built:
    """Write the check's target, corpus, vocabulary and manifest to `out` (see the module
    docstring) from the IDX files under `source`. A finished build of the same spec is reused.
    Built in `out.tmp` and renamed into place, so a killed build leaves nothing half-done at
    `out`; an existing `out` is replaced only when it is an earlier build (it has a manifest)."""
    spec.check()
    out = Path(out).expanduser()
    done = load_built(out)
    if (done is not None and _spec_json(done.spec) == _spec_json(spec)
            and done.source == str(Path(source).resolve())):
        return done
    if out.exists() and done is None and (not out.is_dir() or any(out.iterdir())):
        raise FashionBuildError(f"{out} exists and is not an earlier Fashion-MNIST build; "
                                "give an empty or new folder")
    train_images, train_labels = load_split(source, "train")
    test_images, test_labels = load_split(source, "test")
    rng = np.random.default_rng(spec.seed)
    targets = set(spec.target_classes)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        corpus_rows: list[tuple[int, int]] = []     # (train index, class)
        for c in range(len(CLASSES)):
            if c in targets:
                train_idx, corpus_idx = _pick(train_labels, c, [spec.train_per_class,
                                                                spec.corpus_per_class], rng, "train")
                (test_idx,) = _pick(test_labels, c, [spec.test_per_class], rng, "test")
                for split, images, idx in (("train", train_images, train_idx),
                                           ("test", test_images, test_idx)):
                    folder = tmp / "target" / split / folder_name(c)
                    folder.mkdir(parents=True)
                    for i in idx:
                        _save(images[i], folder / f"{split}-{int(i):05d}.png", spec.size)
            else:
                (corpus_idx,) = _pick(train_labels, c, [spec.corpus_per_class], rng, "train")
            corpus_rows += [(int(i), c) for i in corpus_idx]

        order = rng.permutation(len(corpus_rows))
        (tmp / "corpus").mkdir(parents=True)
        classes: dict[str, int] = {}
        listing = []
        for n, row in enumerate(order):
            i, c = corpus_rows[row]
            rel = f"{n:06d}.png"
            _save(train_images[i], tmp / "corpus" / rel, spec.size)
            named = c
            if spec.mislabel_share and rng.random() < spec.mislabel_share:
                named = int(rng.choice([k for k in range(len(CLASSES)) if k != c]))
            listing.append(json.dumps({"file": rel, "caption": caption(named, rng, spec.noise_words)}))
            classes[rel] = c
        (tmp / "corpus" / "captions.jsonl").write_text("\n".join(listing) + "\n")
        (tmp / "vocab.txt").write_text(
            "# Fashion-MNIST check: the ten class names, then distractor concepts\n"
            + "\n".join(vocabulary()) + "\n")
        manifest = {"source": str(Path(source).resolve()), "classes": list(CLASSES),
                    "spec": _spec_json(spec), "corpus": classes}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=0))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    built = load_built(out)
    if built is None:
        raise FashionBuildError(f"{out}: its manifest could not be read back after writing it")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a Fashion-MNIST target, corpus and vocabulary.")
    parser.add_argument("out", help="folder to write (new, empty, or an earlier build)")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="folder of the IDX files")
    parser.add_argument("--target-classes", default="T-shirt/top,Pullover,Coat,Shirt")
    parser.add_argument("--train-per-class", type=int, default=BuildSpec.train_per_class)
    parser.add_argument("--test-per-class", type=int, default=BuildSpec.test_per_class)
    parser.add_argument("--corpus-per-class", type=int, default=BuildSpec.corpus_per_class)
    parser.add_argument("--size", type=int, default=BuildSpec.size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mislabel-share", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        built = build(args.source, args.out, BuildSpec(
            target_classes=parse_classes(args.target_classes), train_per_class=args.train_per_class,
            test_per_class=args.test_per_class, corpus_per_class=args.corpus_per_class,
            size=args.size, seed=args.seed, mislabel_share=args.mislabel_share))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"explore run --target folder:{built.target} --engine corpus:{built.corpus} "
          f"--vocab file:{built.vocab}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
