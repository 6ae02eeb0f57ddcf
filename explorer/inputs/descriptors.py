"""Per-concept refined queries ("descriptors"): for each concept of the vocabulary, a few full
query texts that ask for the same thing in other words, for a policy to re-ask a concept that
paid off.

Where they come from, by vocabulary spec (`PolicyConfig.vocab`):
- `imagenet21k`: the concept's synset in timm's lemma and definition files: its other lemmas
  (synonyms), then one gloss phrase (`gloss_phrase`). timm ships no hierarchy, so there are no
  hyponyms offline.
- `wordnet`: the concept's first noun synset in nltk's WordNet: its other lemmas, the first lemma
  of its first few hyponyms (as `query_text`), then the gloss phrase. Needs nltk and its
  WordNet data; without them a one-line `VocabError` says how to get them.
- `sandbox`: the sandbox world's `World.descriptors`, passed in by the caller.
- `file:PATH`: none of its own.
- `policy.concept_descriptors`, with any vocabulary: a file of `concept<TAB>descriptor` lines
  (`file_descriptors`), whose texts come first.

Every text is normalised like a concept, at most `MAX_WORDS` words and `MAX_CHARS` characters,
and never equal (case-insensitively) to a concept of the vocabulary: that would be asking another
concept, not this one in other words.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from explorer.inputs.vocab import VocabError, _timm_info_dir, imagenet21k_synsets, imagenet_synset_lemmas, normalise_concept

log = logging.getLogger(__name__)

MAX_WORDS = 8
MAX_CHARS = 80
GLOSS_WORDS = 3          # content words of the gloss in a gloss phrase
HYPONYMS = 3             # wordnet: hyponyms looked at per concept
MAX_LINE_CHARS = 500     # longer descriptor-file lines are skipped
MAX_FILE_BYTES = 64 << 20

# words of a gloss that say little about what a picture shows
GLOSS_STOP_WORDS = frozenset("""
    a an the any some many several various each all both either one two other others such
    of or and with without for in on at by from to into as than that which who whom whose where
    when while its it their his her this these those is are was were be been being has have had
    not no very more most also usually often especially typically sometimes used using
    e g etc kind kinds type types sort form forms member members having make makes made
    someone something like
""".split())

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def concept_descriptors(spec: str, concepts: list[str], path: str = "", limit: int = 4,
                        world_descriptors: Callable[[str], list[str]] | None = None
                        ) -> dict[str, list[str]]:
    """Up to `limit` distinct refined query texts per concept of the vocabulary `concepts`
    (loaded from `spec`), for the concepts that have any: the `path` file's first, then the
    vocabulary's. `world_descriptors` is the sandbox world's `descriptors` (spec `sandbox` only)."""
    vocab_texts = _vocab_descriptors(spec, concepts, world_descriptors)
    file_texts = file_descriptors(path, concepts) if path else {}
    taken = {normalise_concept(c).casefold() for c in concepts}
    out: dict[str, list[str]] = {}
    for concept in concepts:
        texts = _pick(file_texts.get(concept, []) + vocab_texts.get(concept, []), taken, limit)
        if texts:
            out[concept] = texts
    return out


def _vocab_descriptors(spec: str, concepts: list[str],
                       world_descriptors: Callable[[str], list[str]] | None) -> dict[str, list[str]]:
    if spec == "imagenet21k":
        return imagenet21k_descriptors(concepts)
    if spec == "wordnet":
        return wordnet_descriptors(concepts)
    if spec == "sandbox":
        if world_descriptors is None:
            raise VocabError("sandbox descriptors come from the world: pass world_descriptors=world.descriptors")
        return {c: list(world_descriptors(c)) for c in concepts}
    if spec.startswith("file:"):
        return {}
    raise VocabError(f"unknown vocabulary {spec!r}: use imagenet21k, wordnet, file:PATH or sandbox")


def _pick(texts: list[str], taken: set[str], limit: int) -> list[str]:
    """The first `limit` texts that fit, are new and are no concept of the vocabulary."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in texts:
        text = normalise_concept(raw)
        key = text.casefold()
        if len(out) >= limit:
            break
        if text and fits(text) and key not in taken and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def fits(text: str) -> bool:
    return len(text) <= MAX_CHARS and len(text.split()) <= MAX_WORDS


def words(text: str) -> list[str]:
    """The casefolded words of a text ("Rosa's bush-like" -> ["rosa's", "bush-like"])."""
    return [w.casefold() for w in _WORD.findall(text)]


def gloss_phrase(concept: str, gloss: str) -> str:
    """The concept followed by the first GLOSS_WORDS content words of its gloss; "" when none.

    Content words: the gloss's first clause (up to ";"), without (parentheses), its words minus
    `GLOSS_STOP_WORDS` and the concept's own words (also with a plural s). As many of them as
    keep the phrase within MAX_WORDS / MAX_CHARS.
        rose, "any of many shrubs of the genus Rosa that bear roses" -> "rose shrubs genus Rosa"
    """
    clause = re.sub(r"\([^)]*\)", " ", gloss.split(";", 1)[0])
    own = set(words(concept))
    own |= {w + "s" for w in own} | {w + "es" for w in own}
    content = [w for w in _WORD.findall(clause) if w.casefold() not in GLOSS_STOP_WORDS and w.casefold() not in own]
    phrase = ""
    for n in range(1, min(GLOSS_WORDS, len(content)) + 1):
        candidate = f"{concept} {' '.join(content[:n])}"
        if not fits(candidate):
            break
        phrase = candidate
    return phrase


def query_text(concept: str, descriptor: str) -> str:
    """A descriptor (a hyponym, a file's descriptor) as a query for the concept: as is when it
    has all the concept's words ("damask rose"), else followed by it ("multiflora rose")."""
    return descriptor if set(words(concept)) <= set(words(descriptor)) else f"{descriptor} {concept}"


# ---- vocabularies ------------------------------------------------------------------------------

def imagenet21k_descriptors(concepts: list[str]) -> dict[str, list[str]]:
    """Synonyms, then the gloss phrase, of each concept's ImageNet-21k synset (timm's files).
    No hyponyms: timm ships the synsets' names and glosses but not the hierarchy."""
    lemmas = imagenet_synset_lemmas()
    synset_of = {c.casefold(): s for c, s in imagenet21k_synsets(lemmas)}
    glosses: dict[str, str] = {}
    for line in (_timm_info_dir() / "imagenet_synset_to_definition.txt").read_text(encoding="utf-8").splitlines():
        synset, _, gloss = line.partition("\t")
        glosses[synset] = gloss
    out: dict[str, list[str]] = {}
    for concept in concepts:
        synset = synset_of.get(concept.casefold())
        if synset is None:
            continue
        synonyms = [n for n in lemmas.get(synset, []) if n.casefold() != concept.casefold()]
        out[concept] = synonyms + [gloss_phrase(concept, glosses.get(synset, ""))]
    return out


def wordnet_descriptors(concepts: list[str]) -> dict[str, list[str]]:
    """Synonyms, the first HYPONYMS hyponyms and the gloss phrase of each concept's first noun
    synset (its most frequent sense) in nltk's WordNet."""
    try:
        from nltk.corpus import wordnet as wn

        synsets = wn.synsets   # nltk loads its data here: LookupError when it is not downloaded
        out: dict[str, list[str]] = {}
        for concept in concepts:
            found = synsets(concept.replace(" ", "_"), pos="n")
            if not found:
                continue
            synset = found[0]
            synonyms = [normalise_concept(n) for n in synset.lemma_names()]
            hyponyms = [query_text(concept, normalise_concept(h.lemma_names()[0]))
                        for h in synset.hyponyms()[:HYPONYMS] if h.lemma_names()]
            out[concept] = ([n for n in synonyms if n.casefold() != concept.casefold()] + hyponyms
                            + [gloss_phrase(concept, synset.definition())])
    except (ImportError, LookupError) as e:
        raise VocabError("the wordnet vocabulary needs nltk and its WordNet data: "
                         "pip install nltk && python -m nltk.downloader wordnet") from e
    return out


# ---- the descriptor file -----------------------------------------------------------------------

def file_descriptors(path: str | Path, concepts: list[str]) -> dict[str, list[str]]:
    """Query texts per concept from a UTF-8 file of `concept<TAB>descriptor` lines
    (`policy.concept_descriptors`); blank lines and `#` comments are skipped.

    Each descriptor becomes a query by `query_text` ("wild\trose" -> "wild rose"). Lines that are not valid UTF-8, hold control characters, are
    longer than MAX_LINE_CHARS, have no tab or an empty side, or give a query over MAX_WORDS /
    MAX_CHARS are skipped, as are lines whose concept is not in `concepts`; one warning counts
    them. A file that cannot be read or has no line for a concept of `concepts` is a VocabError.
    """
    where = f"concept descriptors file {path} (policy.concept_descriptors)"
    try:
        with open(Path(path).expanduser(), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise VocabError(f"cannot read {where}: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise VocabError(f"{where} is larger than {MAX_FILE_BYTES >> 20} MiB")
    by_key = {normalise_concept(c).casefold(): c for c in concepts}
    out: dict[str, list[str]] = {}
    bad = unknown = good = 0
    for raw in data.split(b"\n"):
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = _parse_line(line)
        if parsed is None:
            bad += 1
            continue
        concept = by_key.get(parsed[0].casefold())
        if concept is None:
            unknown += 1
            continue
        text = query_text(concept, parsed[1])
        if not fits(text):
            bad += 1
            continue
        good += 1
        out.setdefault(concept, []).append(text)
    if bad or unknown:
        log.warning("%s: %d line(s) name no concept of the vocabulary, %d malformed line(s) skipped",
                    where, unknown, bad)
    if not good:
        raise VocabError(f"{where} has no valid `concept<TAB>descriptor` line for a concept of the vocabulary")
    return out


def _parse_line(line: str) -> tuple[str, str] | None:
    """(concept, descriptor), normalised, or None for a line to skip."""
    if len(line) > MAX_LINE_CHARS or "\t" not in line or "\ufffd" in line:
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\t" for ch in line):
        return None
    concept, _, descriptor = (normalise_concept(part) for part in line.partition("\t"))
    return (concept, descriptor) if concept and descriptor else None
