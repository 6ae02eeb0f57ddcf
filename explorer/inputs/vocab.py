"""The concept vocabulary the policy chooses from, and its text embeddings.

Specs (`PolicyConfig.vocab`):
- `imagenet21k`: the ImageNet-21k synsets (timm's `imagenet21k_goog_synsets.txt`, 21,843) named
  by their lemmas (timm's `imagenet_synset_to_lemma.txt`). One concept per synset: its first
  lemma, or, when an earlier synset already took that lemma ("crane" the bird and the machine),
  its first lemma still free; a synset whose lemmas are all taken is dropped. This keeps one
  search query per synset where the names allow (20,928 concepts) without adding the rarer
  synonyms (~37k lemmas in all), which mostly repeat a synset's images.
- `wordnet`: every WordNet noun lemma, from nltk's WordNet where nltk and its data are installed.
- `file:PATH`: one concept a line (blank lines and `#` comments skipped).
- `sandbox`: the sandbox world's concept list; the caller passes it through `normalise_concepts`.

Concept embeddings are computed once per (ordered concept list, text model) and cached as
`CACHE_DIR/<sha256>.npy`.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cache.atomic import atomic_write

EmbedFn = Callable[[list[str]], np.ndarray]


class VocabError(ValueError):
    """A vocabulary spec that cannot be loaded; the message is one line for the user."""


def normalise_concept(text: str) -> str:
    """Underscores to spaces, whitespace collapsed and stripped (case kept)."""
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip()


def normalise_concepts(concepts: list[str]) -> list[str]:
    """Normalise each concept and drop empties and case-insensitive repeats, keeping the first."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in concepts:
        concept = normalise_concept(raw)
        key = concept.casefold()
        if concept and key not in seen:
            seen.add(key)
            out.append(concept)
    return out


def class_name_texts(classes: list[str], max_chars: int = 100) -> list[str]:
    """A target's class names as text for the policy's first round (`Policy.use_class_names`):
    folder names read as words ("001.Black_footed_Albatross" -> "Black footed Albatross"),
    control characters dropped, each cut at `max_chars`; names without two letters in a row
    (numeric labels, WordNet ids like n01440764) and repeats are left out."""
    out = []
    for name in classes:
        text = re.sub(r"^\d+[._\-]+", "", str(name))   # a class number before the name
        text = normalise_concept(re.sub(r"[\x00-\x1f\x7f_.\-]+", " ", text))[:max_chars].strip()
        if re.search(r"[^\W\d_]{2}", text):
            out.append(text)
    return normalise_concepts(out)


def _timm_info_dir() -> Path:
    """timm's data/_info folder, found without importing timm (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise VocabError("the imagenet21k vocabulary needs timm installed (pip install timm)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"


def imagenet_synset_lemmas() -> dict[str, list[str]]:
    """Each ImageNet synset's lemmas, normalised, in timm's order: {"n12620196": ["rose", "rosebush"]}."""
    lemmas: dict[str, list[str]] = {}
    for line in (_timm_info_dir() / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        synset, _, names = line.partition("\t")
        lemmas[synset] = [name for name in map(normalise_concept, names.split(",")) if name]
    return lemmas


def imagenet21k_synsets(lemmas: dict[str, list[str]] | None = None) -> list[tuple[str, str]]:
    """(concept, synset) for each ImageNet-21k synset that gets a concept, in synset order
    (see the module docstring); `lemmas`: `imagenet_synset_lemmas()` when the caller has them."""
    lemmas = imagenet_synset_lemmas() if lemmas is None else lemmas
    synsets = (_timm_info_dir() / "imagenet21k_goog_synsets.txt").read_text().split()
    taken: set[str] = set()
    out: list[tuple[str, str]] = []
    for synset in synsets:
        for name in lemmas.get(synset, []):
            if name.casefold() not in taken:
                taken.add(name.casefold())
                out.append((name, synset))
                break
    return out


def imagenet21k_concepts() -> list[str]:
    """One lemma per ImageNet-21k synset, in synset order (see the module docstring)."""
    return [concept for concept, _ in imagenet21k_synsets()]


def wordnet_concepts() -> list[str]:
    """Every WordNet noun lemma (nltk's WordNet); a clear error where it is not installed."""
    try:
        from nltk.corpus import wordnet as wn

        names = [lemma for synset in wn.all_synsets("n") for lemma in synset.lemma_names()]
    except (ImportError, LookupError) as e:
        raise VocabError("the wordnet vocabulary needs nltk and its WordNet data: "
                         "pip install nltk && python -m nltk.downloader wordnet") from e
    return normalise_concepts(names)


def file_concepts(path: str | Path) -> list[str]:
    """One concept a line; blank lines and lines starting with `#` are skipped."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise VocabError(f"cannot read vocabulary file {path}: {e.strerror or e}") from e
    concepts = normalise_concepts([ln for ln in lines if not ln.lstrip().startswith("#")])
    if not concepts:
        raise VocabError(f"vocabulary file {path} has no concepts")
    return concepts


def load_vocab(spec: str) -> list[str]:
    """Concepts for `imagenet21k`, `wordnet` or `file:PATH`, normalised and deduplicated.

    `sandbox` is the caller's business: the sandbox world hands its list to `normalise_concepts`.
    """
    if spec == "imagenet21k":
        return normalise_concepts(imagenet21k_concepts())
    if spec == "wordnet":
        return wordnet_concepts()
    if spec.startswith("file:"):
        return file_concepts(spec[len("file:"):])
    if spec == "sandbox":
        raise VocabError("the sandbox vocabulary comes from the sandbox world, not from load_vocab")
    raise VocabError(f"unknown vocabulary {spec!r}: use imagenet21k, wordnet, file:PATH or sandbox")


def cache_key(concepts: list[str], model_name: str) -> str:
    """sha256 of the ordered concept list and the text model name."""
    payload = json.dumps({"model": model_name, "concepts": list(concepts)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def concept_embeddings(concepts: list[str], model_name: str, cache_dir: str | Path,
                       batch_size: int = 1024, progress: bool = True,
                       embed_fn: EmbedFn | None = None) -> np.ndarray:
    """Unit-norm text embeddings of `concepts`: float32 [N, D], row i for concepts[i].

    Read from `cache_dir/<cache_key>.npy` when present; otherwise computed in batches (with a
    progress bar) by `embed_fn` (default: the text model `model_name`) and written atomically.
    """
    path = Path(cache_dir).expanduser() / f"{cache_key(concepts, model_name)}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(concepts):
            return cached
    if embed_fn is None:
        from explorer.inputs.text import embed_texts

        def embed_fn(batch: list[str]) -> np.ndarray:
            return embed_texts(batch, name=model_name, batch_size=min(batch_size, 256))

    batches = [concepts[i:i + batch_size] for i in range(0, len(concepts), batch_size)]
    if progress and batches:
        from rich.progress import track

        batches = track(batches, description=f"embedding {len(concepts)} concepts")
    parts = [np.asarray(embed_fn(list(batch)), dtype=np.float32) for batch in batches]
    if not parts:
        raise VocabError("cannot embed an empty vocabulary")
    emb = np.concatenate(parts, axis=0)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    _save_npy(path, emb)
    return emb


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)
