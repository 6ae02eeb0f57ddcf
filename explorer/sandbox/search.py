"""The sandbox's image search engine: query text -> ranked image ids with noisy titles.

A query is matched to concepts by idf-weighted word overlap, after fuzzy correction of words the
world does not know ("roses" -> "rose", "tulpi" -> "tulip"). Results are mostly pictures of the
best concept, with ranking noise: pictures of related concepts (the same ids they get under their
own queries), near-copies, unrelated junk, and, for queries about a target's classes, near-copies
of that target's test images. Everything is deterministic for (seed, query, max_results).
"""
from __future__ import annotations

import difflib
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass

from explorer.sandbox import vocab
from explorer.sandbox.world import World, stable_hash

STOP_WORDS = {"a", "an", "the", "of", "photo", "picture", "image", "images", "photos", "pictures",
              "and", "in", "on", "with", "for", "to", "hd", "free", "stock"}
SHARE_BEST = 0.72      # rank slots given to the best concept
SHARE_RELATED = 0.15   # ... to related concepts (same noun or family)
SHARE_COPY = 0.05      # ... to near-copies (re-encoded, resized) of either
LEAK_RATE = 0.04       # ... to near-copies of target test images, when the query is about a class
MAX_RESULTS = 500


@dataclass(frozen=True)
class Hit:
    image_id: str
    title: str


def tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOP_WORDS]


class SearchIndex:
    def __init__(self, world: World):
        self.world = world
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(world.concepts):
            for t in sorted(set(tokens(name))):
                self._postings[t].append(i)
        n = len(world.concepts)
        self._idf = {t: math.log(n / len(p)) + 0.1 for t, p in self._postings.items()}
        self._norm = [math.sqrt(sum(self._idf[t] ** 2 for t in sorted(set(tokens(name))))) for name in world.concepts]
        self._words = sorted(self._postings)
        self._class_of = {}  # (family, noun) -> (target, class index)
        for target in world.target_names:
            for y, noun in enumerate(world.target_classes(target)):
                self._class_of[(world.target_family(target), noun)] = (target, y)

    def correct(self, word: str) -> str | None:
        """The world's word closest to `word`, or None if nothing is close."""
        if word in self._postings:
            return word
        close = difflib.get_close_matches(word, self._words, n=1, cutoff=0.75)
        return close[0] if close else None

    def match(self, query: str) -> list[tuple[int, float]]:
        """Concepts sharing words with the query: (index, cosine of idf-weighted words), best first."""
        words = sorted({w for w in (self.correct(t) for t in tokens(query)) if w})
        if not words:
            return []
        qnorm = math.sqrt(sum(self._idf[w] ** 2 for w in words))
        scores: dict[int, float] = defaultdict(float)
        for w in words:
            for i in self._postings[w]:
                scores[i] += self._idf[w] ** 2
        seed = self.world.seed
        ranked = sorted(((i, s / (qnorm * self._norm[i])) for i, s in scores.items()),
                        key=lambda x: (-round(x[1], 9), stable_hash(seed, query, x[0])))
        return ranked

    def search(self, query: str, max_results: int) -> list[Hit]:
        w = self.world
        n = max(0, min(int(max_results), MAX_RESULTS))
        r = random.Random(stable_hash(w.seed, "search", query, n))
        matches = self.match(query)
        V = w.images_per_concept
        if not matches:  # nothing matches: a few unrelated results
            return self._dedup([self._junk(r) for _ in range(n // 5)], r)
        best, score = matches[0]
        if score < 0.5:
            n = n // 2
        related = [i for i, _ in matches[1:40]] or [best]
        variants = list(range(V))
        r.shuffle(variants)
        leak_class = self._class_of.get((w.concept(best).family, w.concept(best).noun))
        ids, next_variant = [], 0
        for _ in range(n * 2):
            if len(ids) >= n:
                break
            u = r.random()
            if leak_class and u < LEAK_RATE:
                target, y = leak_class
                ids.append(w.leak_image_id(target, y, r.randrange(w.test_per_class), r.randint(1, 3)))
            elif u < SHARE_BEST:
                ids.append(w.web_image_id(best, variants[next_variant % V], next_variant // V))
                next_variant += 1
            elif u < SHARE_BEST + SHARE_RELATED:
                ids.append(w.web_image_id(r.choice(related), r.randrange(V)))
            elif u < SHARE_BEST + SHARE_RELATED + SHARE_COPY:
                ids.append(w.web_image_id(r.choice([best, r.choice(related)]), r.randrange(V), r.randint(1, 3)))
            else:
                ids.append(self._junk(r))
        return self._dedup(ids, r)[:n]

    def _junk(self, r: random.Random) -> str:
        return self.world.web_image_id(r.randrange(len(self.world.concepts)), r.randrange(self.world.images_per_concept))

    def _dedup(self, ids: list[str], r: random.Random) -> list[Hit]:
        seen, out = set(), []
        for i in ids:
            if i not in seen:
                seen.add(i)
                out.append(Hit(i, self.title(i)))
        return out

    def title(self, image_id: str) -> str:
        """The page title around an image: its concept's name with realistic noise."""
        w = self.world
        info = w.image_info(image_id)
        r = random.Random(stable_hash(w.seed, "title", image_id))
        name = info.concept if info.concept else info.noun
        if r.random() < 0.05:  # an unrelated title
            name = w.concepts[r.randrange(len(w.concepts))]
        words = name.split()
        if r.random() < 0.15:  # a typo: two letters swapped
            j = r.randrange(len(words))
            word = words[j]
            if len(word) > 3:
                k = r.randrange(len(word) - 1)
                words[j] = word[:k] + word[k + 1] + word[k] + word[k + 2:]
        if r.random() < 0.3:
            words = r.choice(vocab.TITLE_PREFIXES).split() + words
        if r.random() < 0.4:
            words += r.choice(vocab.TITLE_SUFFIXES).split()
        if r.random() < 0.1:
            words.insert(r.randrange(len(words) + 1), r.choice(vocab.JUNK_WORDS))
        text = " ".join(words)
        if r.random() < 0.5:
            text = text.capitalize() if r.random() < 0.5 else text.title()
        if r.random() < 0.5:
            text += r.choice([" - ", " | ", " :: "]) + r.choice(vocab.SITES)
        return text
