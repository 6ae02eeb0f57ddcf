"""The sandbox's image search engine: query text -> ranked image ids with noisy titles.

A query is matched to concepts by idf-weighted word overlap, after fuzzy correction of words the
world does not know ("roses" -> "rose", "tulpi" -> "tulip"). Results are mostly pictures of the
best concept, with ranking noise: pictures of related concepts (the same ids they get under their
own queries), near-copies, unrelated junk, and, for queries about a target's classes, near-copies
of that target's test images. Everything is deterministic for (seed, query, max_results, page).

Pages, as real engines serve them: with `page_size` > 0 an answer holds at most page_size results
(Bing: 35). Page P holds ranks (P-1)*L .. P*L-1 of one ranked list, L the page's length, so pages
never repeat each other; the list ends at MAX_DEPTH ranks. Page 1 is what an answer of L results
was before pages existed. Later pages are less on-topic: page P gives the best concept
page_decay**(P-1) of page 1's share of slots and the rest to unrelated junk, while related
concepts, near-copies and leaks keep their shares; the best concept's pictures carry on from where
the earlier pages stopped. A query that matches nothing has no page 2.

Titles (`title`): the picture's concept with realistic noise (typos, site names, stock words),
5% another concept's name. `named_titles` < NAMED_MAX turns a further share into titles that do
not name the picture at all, as much of the web's alt text does: the family only ("flowers"),
a camera's file name, a page's boilerplate, or nothing. Those are drawn from a stream of their
own, so lowering the share only takes names away (the titles that keep one are unchanged).
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
MAX_PAGE = 1000       # deepest page asked for; the server refuses deeper ones
MAX_DEPTH = 5000      # ranks a query's pages reach at most, as real engines stop; deeper pages are empty
UNRELATED_TITLES = 0.05  # titles that name another concept
NAMED_MAX = 1 - UNRELATED_TITLES   # the most titles that can name their picture (the default)


@dataclass(frozen=True)
class Hit:
    image_id: str
    title: str


def tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOP_WORDS]


def unique(ids: list[str]) -> list[str]:
    """ids without repeats, first come first kept."""
    return list(dict.fromkeys(ids))


class Slots:
    """Draws a query's result slots one rank at a time: which picture each rank shows.

    The best concept's pictures come in a shuffled order, each once, then again as near-copies."""

    def __init__(self, world: World, r: random.Random, best: int, related: list[int],
                 variants: list[int], leak_class: tuple[str, int] | None):
        self.world, self.r = world, r
        self.best, self.related, self.variants, self.leak_class = best, related, variants, leak_class
        self.next_variant = 0

    def draw(self, on_topic: float = 1.0) -> str:
        """One slot's image id; on_topic < 1 hands that part of the best concept's share to junk."""
        w, r, V = self.world, self.r, self.world.images_per_concept
        u = r.random()
        floor = LEAK_RATE if self.leak_class else 0.0
        if self.leak_class and u < LEAK_RATE:
            target, y = self.leak_class
            return w.leak_image_id(target, y, r.randrange(w.test_per_class), r.randint(1, 3))
        if u < SHARE_BEST - (SHARE_BEST - floor) * (1.0 - on_topic):  # exactly SHARE_BEST at on_topic 1
            image_id = w.web_image_id(self.best, self.variants[self.next_variant % V], self.next_variant // V)
            self.next_variant += 1
            return image_id
        if SHARE_BEST <= u < SHARE_BEST + SHARE_RELATED:
            return w.web_image_id(r.choice(self.related), r.randrange(V))
        if SHARE_BEST + SHARE_RELATED <= u < SHARE_BEST + SHARE_RELATED + SHARE_COPY:
            return w.web_image_id(r.choice([self.best, r.choice(self.related)]), r.randrange(V), r.randint(1, 3))
        return w.web_image_id(r.randrange(len(w.concepts)), r.randrange(V))


class SearchIndex:
    def __init__(self, world: World, page_size: int = 0, page_decay: float = 0.75,
                 named_titles: float = NAMED_MAX):
        if not 0.0 <= named_titles <= NAMED_MAX:
            raise ValueError(f"named_titles must be within [0, {NAMED_MAX}], not {named_titles}")
        self.world = world
        self.named_titles = named_titles  # share of titles that name the picture's concept
        self.page_size = page_size      # results an answer holds at most; 0 = as many as asked
        self.page_decay = page_decay    # page P's share of on-topic slots: page_decay**(P-1) of page 1's
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

    def search(self, query: str, max_results: int, page: int = 1) -> list[Hit]:
        """Page `page` (1 = first) of the results for `query`: at most max_results, and at most
        page_size when pages are on."""
        if not 1 <= page <= MAX_PAGE:
            raise ValueError(f"page must be between 1 and {MAX_PAGE}, not {page}")
        n = max(0, min(int(max_results), MAX_RESULTS))
        length = min(n, self.page_size) if self.page_size > 0 else n
        return [Hit(i, self.title(i)) for i in self._ranked(query, length, page)]

    def _ranked(self, query: str, n: int, page: int) -> list[str]:
        """The ids on page `page` of n results. One generator draws page 1 at full shares, then
        each later page in turn at its decayed on-topic share, skipping ids already drawn."""
        r = random.Random(stable_hash(self.world.seed, "search", query, n))
        matches = self.match(query)
        if not matches:  # nothing matches: a few unrelated results, and no second page
            return unique([self._junk(r) for _ in range(n // 5)]) if page == 1 else []
        if matches[0][1] < 0.5:
            n = n // 2
        if (page - 1) * n >= MAX_DEPTH:
            return []
        slots = self._slots(r, matches)
        drawn = []
        for _ in range(n * 2):
            if len(drawn) >= n:
                break
            drawn.append(slots.draw())
        ids, seen = unique(drawn), set(drawn)
        for p in range(2, page + 1):
            on_topic = self.page_decay ** (p - 1)
            ids, goal = [], min(n, MAX_DEPTH - (p - 1) * n)
            for _ in range(goal * 3):
                if len(ids) >= goal:
                    break
                image_id = slots.draw(on_topic)
                if image_id not in seen:
                    seen.add(image_id)
                    ids.append(image_id)
        return ids

    def _slots(self, r: random.Random, matches: list[tuple[int, float]]) -> Slots:
        w = self.world
        best = matches[0][0]
        related = [i for i, _ in matches[1:40]] or [best]
        variants = list(range(w.images_per_concept))
        r.shuffle(variants)
        leak_class = self._class_of.get((w.concept(best).family, w.concept(best).noun))
        return Slots(w, r, best, related, variants, leak_class)

    def _junk(self, r: random.Random) -> str:
        return self.world.web_image_id(r.randrange(len(self.world.concepts)), r.randrange(self.world.images_per_concept))

    def title(self, image_id: str) -> str:
        """The page title around an image: its concept's name with realistic noise."""
        w = self.world
        info = w.image_info(image_id)
        r = random.Random(stable_hash(w.seed, "title", image_id))
        name = info.concept if info.concept else info.noun
        if r.random() < UNRELATED_TITLES:  # an unrelated title
            name = w.concepts[r.randrange(len(w.concepts))]
        elif self.named_titles < NAMED_MAX:
            u = random.Random(stable_hash(w.seed, "unnamed title", image_id))
            if u.random() < 1 - self.named_titles / NAMED_MAX:
                return unnamed_title(u, info.family)
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


def unnamed_title(r: random.Random, family: str) -> str:
    """A title that does not name its picture: the family only, a camera's file name, a page's
    boilerplate, or none."""
    kind = r.random()
    if kind < 0.35:
        words = [family]
        if r.random() < 0.5:
            words = r.choice(vocab.TITLE_PREFIXES).split()[:1] + words
        if r.random() < 0.5:
            words += r.choice(vocab.TITLE_SUFFIXES).split()
        return " ".join(words)
    if kind < 0.6:
        return r.choice(vocab.CAMERA_NAMES).format(r.randrange(1, 10_000)) + r.choice(["", ".jpg", ".JPG", ".png"])
    if kind < 0.85:
        return r.choice(vocab.BOILERPLATE).format(site=r.choice(vocab.SITES), n=r.randrange(2, 40))
    return ""
