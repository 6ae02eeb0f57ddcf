"""The sandbox world: concepts in families, their pictures, the targets and the ground truth.

Everything is a pure function of the seed. Concepts are "<colour> <noun>" and "<adjective> <noun>"
for each family's nouns (vocab.py). An image id names what it shows, so any image can be drawn
again from its id alone:

    c<concept>v<variant>[k<copy>]      picture `variant` of a concept; k>0: a near-copy of it
                                       (cropped, recoloured a little, resized, re-encoded)
    t<target>y<class>n<index>k<copy>   a copy of a target's *test* image (a leak), re-posted as the
                                       web does (repost.py): flipped, cropped, greyed, framed,
                                       recompressed, resized, turned or recoloured, by the id

Pictures are drawn small (long side <= 128 px) and resized to the size the id claims.

`looks`: "family" (each family has its backdrop, each noun its palette: colour alone tells a
family apart, and an untrained encoder's rewards already pick the right one) or "shared" (every
picture's backdrop is any family's, and the k-th noun of every family has the same palette: only
shape and texture tell the target's classes from their distractors, as in real photographs).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, ImageEnhance

from explorer.sandbox import vocab
from explorer.sandbox.draw import draw_picture
from explorer.sandbox.repost import KINDS, repost

FORMATS = ("jpg", "png", "webp")
LOOKS = ("family", "shared")
FORMAT_SHARES = (0.7, 0.15, 0.15)   # as on the web, mostly JPEG
CANVAS = 128                      # long side at which pictures are drawn before resizing
MARKER = ".complete"              # written last into a finished target folder

_WEB_ID = re.compile(r"^c(\d+)v(\d+)(?:k(\d+))?$")
_LEAK_ID = re.compile(r"^t(\d+)y(\d+)n(\d+)k(\d+)$")


def image_id_of_url(url: str) -> str | None:
    """The image id in a sandbox image URL (".../img/<id>.<ext>"), or None."""
    path = urlsplit(url).path
    if "/img/" not in path and "/thumb/" not in path:
        return None
    return path.rsplit("/", 1)[1].rpartition(".")[0] or None


def stable_hash(*parts) -> int:
    """A 64-bit hash of `parts` that is the same in every process (unlike `hash`)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def unit(*parts) -> float:
    """A deterministic uniform number in [0, 1) from `parts`."""
    return stable_hash(*parts) / 2.0**64


@dataclass(frozen=True)
class Concept:
    index: int
    name: str
    family: str
    noun: str
    colour: str | None
    adjective: str | None


@dataclass(frozen=True)
class ImageInfo:
    """What an image id shows and how it is served."""
    image_id: str
    base_id: str                   # the id without its copy suffix
    concept: str | None            # None for leaks of target test images
    family: str
    noun: str
    width: int
    height: int
    ext: str                       # jpg, png or webp
    copy: int                      # 0 = original, k > 0 = near-copy k
    leak: tuple[str, str, int] | None = None   # (target, class, test index)


class World:
    """A seeded world of concepts, pictures and targets. Cheap to build; pictures on demand."""

    def __init__(self, seed: int = 0, images_per_concept: int = 40,
                 train_per_class: int = 30, test_per_class: int = 20, looks: str = "family"):
        if looks not in LOOKS:
            raise ValueError(f"unknown sandbox looks {looks!r}; choose from {', '.join(LOOKS)}")
        self.seed = seed
        self.looks = looks
        self.images_per_concept = images_per_concept
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self._concepts: list[Concept] = []
        for family, (nouns, adjectives) in vocab.FAMILIES.items():
            for noun in nouns:
                for colour in vocab.COLOURS:
                    self._concepts.append(Concept(len(self._concepts), f"{colour} {noun}", family, noun, colour, None))
                for adjective in adjectives:
                    self._concepts.append(Concept(len(self._concepts), f"{adjective} {noun}", family, noun, None, adjective))
        self.concepts: list[str] = [c.name for c in self._concepts]
        self._by_name = {c.name: c for c in self._concepts}
        self._params = {f: self._shape_params(f, nouns) for f, (nouns, _) in vocab.FAMILIES.items()}
        colours = list(vocab.COLOURS)
        if looks == "family":
            self._palette = {(f, n): random.Random(stable_hash(seed, "palette", f, n)).sample(colours, 3)
                             for f, (nouns, _) in vocab.FAMILIES.items() for n in nouns}
        else:  # (the k-th noun of every family: one palette)
            self._palette = {(f, n): random.Random(stable_hash(seed, "palette", k)).sample(colours, 3)
                             for f, (nouns, _) in vocab.FAMILIES.items() for k, n in enumerate(nouns)}
        self.target_names: list[str] = list(vocab.TARGETS)

    # ---- concepts and ground truth ---------------------------------------------------------

    def concept(self, name_or_index: str | int) -> Concept:
        if isinstance(name_or_index, int):
            return self._concepts[name_or_index]
        return self._by_name[name_or_index]

    def descriptors(self, concept: str) -> list[str]:
        """Refined queries for a concept: its name after each of its family's adjectives that it
        does not carry ("red rose" -> "wild red rose", "garden red rose", ...). The search engine
        still matches them best to a concept of the same noun."""
        c = self._by_name[concept]
        return [f"{adjective} {c.name}" for adjective in vocab.FAMILIES[c.family][1] if adjective != c.adjective]

    @property
    def families(self) -> list[str]:
        return list(vocab.FAMILIES)

    def family_of(self, concept: str) -> str:
        return self._by_name[concept].family

    def target_family(self, target: str) -> str:
        if target not in vocab.TARGETS:
            raise KeyError(f"unknown sandbox target {target!r}; known: {', '.join(vocab.TARGETS)}")
        return vocab.TARGETS[target]

    def target_classes(self, target: str) -> list[str]:
        """Class nouns of a target, in label order."""
        return vocab.FAMILIES[self.target_family(target)][0][:vocab.CLASSES_PER_TARGET]

    def relevance(self, target: str) -> dict[str, float]:
        """Ground truth in [0, 1] for every concept: 1 for the target's classes, 0.5 for other
        nouns of its family, a partial weight for look-alike families, 0 otherwise."""
        family = self.target_family(target)
        classes = set(self.target_classes(target))
        near = vocab.NEAR_FAMILIES.get(family, {})
        out = {}
        for c in self._concepts:
            if c.family == family:
                out[c.name] = 1.0 if c.noun in classes else 0.5
            else:
                out[c.name] = near.get(c.family, 0.0)
        return out

    def image_relevance(self, target: str, image_id: str) -> float:
        """Ground-truth relevance of one served image (a leak of the target's test set counts 1)."""
        info = self.image_info(image_id)
        if info is None:
            return 0.0
        if info.leak is not None:
            return 1.0 if info.leak[0] == target else 0.0
        return self.relevance_of(target, info.concept)

    def target_class_shown(self, target: str, image_id: str) -> str | None:
        """Which of the target's classes one served image shows (a leak of its test set too),
        or None: another noun, another family, not one of this world's ids."""
        info = self.image_info(image_id)
        if info is None or info.family != self.target_family(target):
            return None
        return info.noun if info.noun in self.target_classes(target) else None

    def relevance_of(self, target: str, concept: str) -> float:
        c = self._by_name[concept]
        family = self.target_family(target)
        if c.family == family:
            return 1.0 if c.noun in self.target_classes(target) else 0.5
        return vocab.NEAR_FAMILIES.get(family, {}).get(c.family, 0.0)

    # ---- image ids --------------------------------------------------------------------------

    def web_image_id(self, concept_index: int, variant: int, copy: int = 0) -> str:
        return f"c{concept_index}v{variant}" + (f"k{copy}" if copy else "")

    def leak_image_id(self, target: str, class_index: int, test_index: int, copy: int) -> str:
        return f"t{self.target_names.index(target)}y{class_index}n{test_index}k{max(1, copy)}"

    def image_info(self, image_id: str) -> ImageInfo | None:
        """What `image_id` shows, or None if the id is not one of this world's."""
        m = _WEB_ID.match(image_id)
        if m:
            ci, vi, k = int(m[1]), int(m[2]), int(m[3] or 0)
            if ci >= len(self._concepts) or vi >= self.images_per_concept:
                return None
            c = self._concepts[ci]
            base = f"c{ci}v{vi}"
            w, h, ext = self._served_size(image_id)
            return ImageInfo(image_id, base, c.name, c.family, c.noun, w, h, ext, k)
        m = _LEAK_ID.match(image_id)
        if m:
            ti, yi, ni, k = (int(g) for g in m.groups())
            if ti >= len(self.target_names) or yi >= vocab.CLASSES_PER_TARGET or ni >= self.test_per_class or k < 1:
                return None
            target = self.target_names[ti]
            noun = self.target_classes(target)[yi]
            w, h, ext = self._served_size(image_id)
            return ImageInfo(image_id, f"t{ti}y{yi}n{ni}", None, self.target_family(target), noun, w, h, ext, k,
                             (target, noun, ni))
        return None

    def _served_size(self, image_id: str) -> tuple[int, int, str]:
        r = random.Random(stable_hash(self.seed, "size", image_id))
        long_side = r.randint(96, 640)
        aspect = r.uniform(0.6, 1.0)
        short = max(64, int(long_side * aspect))
        w, h = (long_side, short) if r.random() < 0.6 else (short, long_side)
        return w, h, r.choices(FORMATS, weights=FORMAT_SHARES)[0]

    # ---- pictures ---------------------------------------------------------------------------

    def _shape_params(self, family: str, nouns: list[str]) -> dict[str, tuple[float, ...]]:
        """Six shape parameters per noun; each is a permutation of evenly spread values, so any
        two nouns of a family differ in every parameter."""
        r = random.Random(stable_hash(self.seed, "shape", family))
        n = len(nouns)
        columns = []
        for _ in range(6):
            values = [(i + 0.5) / n for i in range(n)]
            r.shuffle(values)
            columns.append(values)
        return {noun: tuple(col[i] for col in columns) for i, noun in enumerate(nouns)}

    def _draw(self, family: str, noun: str, colour: str | None, effect: str | None,
              key: tuple, size: tuple[int, int]) -> Image.Image:
        r = random.Random(stable_hash(self.seed, "draw", *key))
        if colour is None:
            colour = r.choice(self._palette[(family, noun)])
        backdrop = r.choice(sorted(vocab.FAMILIES)) if self.looks == "shared" else family
        return draw_picture(family, self._params[family][noun], vocab.COLOURS[colour], effect, r, size,
                            backdrop=backdrop)

    def target_image(self, target: str, split: str, class_index: int, index: int) -> Image.Image:
        """One labelled target image (64-96 px); its colour comes from the class's palette and
        one picture in three gets one of the family's adjective effects."""
        family = self.target_family(target)
        noun = self.target_classes(target)[class_index]
        r = random.Random(stable_hash(self.seed, "target", target, split, class_index, index))
        side = r.randint(64, 96)
        effects = list(vocab.FAMILIES[family][1].values())
        effect = r.choice(effects) if r.random() < 1 / 3 else None
        return self._draw(family, noun, None, effect, ("target", target, split, class_index, index), (side, side))

    def render(self, image_id: str) -> Image.Image:
        """The picture `image_id` names, at its served size (RGB)."""
        info = self.image_info(image_id)
        if info is None:
            raise KeyError(f"no such image {image_id!r}")
        if info.leak is not None:
            target, noun, index = info.leak
            base = self.target_image(target, "test", self.target_classes(target).index(noun), index)
        else:
            base = self._render_base(info)
        if info.leak is not None:
            base = repost(base, self.repost_kind(image_id), random.Random(stable_hash(self.seed, "copy", image_id)))
        elif info.copy:
            base = self._near_copy(base, image_id)
        return base.resize((info.width, info.height), Image.BILINEAR)

    def repost_kind(self, image_id: str) -> str:
        """How a leak of a test image was re-posted (one of repost.KINDS), chosen by its id."""
        return KINDS[stable_hash(self.seed, "repost", image_id) % len(KINDS)]

    def _render_base(self, info: ImageInfo) -> Image.Image:
        c = self._by_name[info.concept]
        base_w, base_h, _ = self._served_size(info.base_id)  # copies keep the original's framing
        scale = CANVAS / max(base_w, base_h)
        size = (max(32, int(base_w * scale)), max(32, int(base_h * scale)))
        families_effects = vocab.FAMILIES[c.family][1]
        effect = families_effects.get(c.adjective) if c.adjective else None
        return self._draw(c.family, c.noun, c.colour, effect, ("web", info.base_id), size)

    def _near_copy(self, img: Image.Image, image_id: str) -> Image.Image:
        r = random.Random(stable_hash(self.seed, "copy", image_id))
        w, h = img.size
        dx, dy = int(w * r.uniform(0, 0.06)), int(h * r.uniform(0, 0.06))
        img = img.crop((dx, dy, w - int(w * r.uniform(0, 0.06)), h - int(h * r.uniform(0, 0.06))))
        img = ImageEnhance.Brightness(img).enhance(r.uniform(0.9, 1.1))
        return img

    def encode(self, image_id: str, ext: str | None = None) -> bytes:
        """The image file bytes as served: JPEG, PNG or WebP (the id's own format by default)."""
        info = self.image_info(image_id)
        if info is None:
            raise KeyError(f"no such image {image_id!r}")
        return encode_image(self.render(image_id), ext or info.ext,
                            quality=60 + stable_hash(self.seed, "q", image_id) % 35)

    # ---- target datasets --------------------------------------------------------------------

    def write_target(self, name: str, root: Path) -> Path:
        """Write `root/{train,test}/<class>/*.png` (a torchvision ImageFolder) and return root.
        Skipped if root holds a complete marker; written to a temporary folder and renamed."""
        root = Path(root)
        self.target_family(name)
        stamp = {"target": name, "seed": self.seed, "train_per_class": self.train_per_class,
                 "test_per_class": self.test_per_class, "classes": self.target_classes(name)}
        if self.looks != "family":  # (stamps written before looks existed stay valid)
            stamp["looks"] = self.looks
        marker = root / MARKER
        if marker.exists() and json.loads(marker.read_text()) == stamp:
            return root
        tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for split, count in (("train", self.train_per_class), ("test", self.test_per_class)):
            for y, noun in enumerate(self.target_classes(name)):
                folder = tmp / split / noun.replace(" ", "_")
                folder.mkdir(parents=True)
                for i in range(count):
                    self.target_image(name, split, y, i).save(folder / f"{i:04d}.png", compress_level=1)
        (tmp / MARKER).write_text(json.dumps(stamp))
        if marker.exists() and json.loads(marker.read_text()) == stamp:  # another process finished first
            shutil.rmtree(tmp)
            return root
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, root)
        return root


def encode_image(img: Image.Image, ext: str, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    if ext in ("jpg", "jpeg"):
        img.save(buf, "JPEG", quality=quality)
    elif ext == "png":
        img.save(buf, "PNG", compress_level=1)
    elif ext == "webp":
        img.save(buf, "WEBP", quality=quality, method=0)
    else:
        raise ValueError(f"unknown image format {ext!r}")
    return buf.getvalue()
