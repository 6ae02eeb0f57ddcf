"""A local image collection searched by caption: exploring one's own data lake.

`corpus:PATH` is either
- a folder of images (searched recursively, hidden folders skipped). Each image's caption is
  its sidecar `<name>.txt`, else its entry in a `captions.jsonl` / `metadata.jsonl` of its
  folder or an ancestor ({"file": relative path, "caption": text}; `file_name` and `text`
  are read too), else its folder and file names with separators turned into spaces
  (`roses/red_rose_1.jpg` -> "roses red rose"). Results point at `file://` URIs.
- a table (.csv, .tsv, .parquet) with columns `url` and `caption` (optional `width`,
  `height`). A `url` without a scheme is a path relative to the table's folder.

The corpus root is the folder, or the table's folder: the crawl reads file:// results only from
under it (explorer/crawl/localfile.py), unless `crawl.corpus_allow_outside`.

Captions are embedded once with the sentence model (unit norm) and cached on disk under a
hash of (model, captions); a query is embedded the same way and answered by cosine similarity
(FAISS inner product).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import faiss
import numpy as np

from cache.atomic import atomic_write

from explorer.config import CrawlConfig
from explorer.engines.base import Engine, SearchOutcome, check_refinement, clean_results
from explorer.inputs.text import embed_texts

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TABLE_SUFFIXES = {".csv", ".tsv", ".parquet"}
CAPTION_LISTS = ("captions.jsonl", "metadata.jsonl")
FILE_KEYS = ("file", "file_name", "path", "image")
CAPTION_KEYS = ("caption", "text", "title")
MAX_CAPTION_CHARS = 1000


@dataclass(frozen=True)
class CorpusItem:
    image: str                            # file:// URI or http(s) URL
    caption: str
    width: int = 0
    height: int = 0


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_CAPTION_CHARS]


def caption_from_name(path: Path, root: Path) -> str:
    """Folder and file names, separators as spaces, bare numbers dropped:
    `roses/red_rose_1.jpg` -> "roses red rose"."""
    rel = path.relative_to(root)
    words = re.split(r"[\s_\-.+]+", " ".join([*rel.parent.parts, rel.stem]))
    words = [w for w in words if w and not w.isdigit()]
    return " ".join(words) or rel.stem


def read_caption_lists(root: Path) -> dict[Path, str]:
    """Captions from every captions.jsonl / metadata.jsonl under `root`, by resolved image path."""
    captions: dict[Path, str] = {}
    for name in CAPTION_LISTS:
        for listing in sorted(root.rglob(name)):
            bad = 0
            for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    file = next(entry[k] for k in FILE_KEYS if isinstance(entry.get(k), str))
                    text = next(entry[k] for k in CAPTION_KEYS if isinstance(entry.get(k), str))
                except (json.JSONDecodeError, StopIteration, AttributeError):
                    bad += 1
                    continue
                captions.setdefault((listing.parent / file).resolve(), _one_line(text))
            if bad:
                log.warning("%s: %d line(s) without a file and a caption were skipped", listing, bad)
    return captions


def list_folder(root: Path) -> list[CorpusItem]:
    """Every image under `root` with its caption, in a stable (sorted) order."""
    listed = read_caption_lists(root)
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_SUFFIXES or any(p.startswith(".") for p in rel.parts):
            continue
        if not path.is_file():
            continue
        sidecar = path.with_suffix(".txt")
        caption = ""
        if sidecar.is_file():
            caption = _one_line(sidecar.read_text(encoding="utf-8", errors="replace"))
        caption = caption or listed.get(path.resolve()) or caption_from_name(path, root)
        items.append(CorpusItem(image=path.resolve().as_uri(), caption=caption))
    return items


def list_table(path: Path) -> list[CorpusItem]:
    """Rows of a CSV/TSV/parquet table with columns url, caption (optional width, height)."""
    import pandas as pd

    if path.suffix.lower() == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",",
                            dtype={"url": str, "caption": str}, keep_default_na=False)
    missing = [c for c in ("url", "caption") if c not in table.columns]
    if missing:
        raise ValueError(f"corpus table {path} needs columns url, caption; it lacks "
                         f"{', '.join(missing)} (has {', '.join(map(str, table.columns))})")
    sizes = {c: pd.to_numeric(table[c], errors="coerce").fillna(0).astype(int)
             if c in table.columns else None for c in ("width", "height")}
    items = []
    for i, (url, caption) in enumerate(zip(table["url"], table["caption"])):
        if not isinstance(url, str) or not url.strip():
            continue
        url = url.strip()
        if not urlsplit(url).scheme:
            url = (path.parent / url).resolve().as_uri()
        items.append(CorpusItem(
            image=url, caption=_one_line(caption if isinstance(caption, str) else ""),
            width=int(sizes["width"].iat[i]) if sizes["width"] is not None else 0,
            height=int(sizes["height"].iat[i]) if sizes["height"] is not None else 0))
    return items


def corpus_root(path: Path) -> Path:
    """The folder whose files the corpus at `path` may be read from: itself, or a table's folder."""
    path = path.resolve()
    return path if path.is_dir() else path.parent


def list_corpus(path: Path) -> list[CorpusItem]:
    if path.is_dir():
        return list_folder(path)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return list_table(path)
    if path.exists():
        raise ValueError(f"corpus {path} is neither a folder nor a {'/'.join(sorted(TABLE_SUFFIXES))} table")
    raise ValueError(f"corpus {path} does not exist")


def caption_embeddings(captions: list[str], model: str, cache_dir: Path,
                       progress: bool = True) -> np.ndarray:
    """Unit-norm caption embeddings [N, D] float32, cached on disk by (model, captions);
    `progress`: a bar while a large table is embedded (none with --quiet)."""
    digest = hashlib.sha256(model.encode())
    for caption in captions:
        digest.update(b"\0" + caption.encode("utf-8"))
    cached = cache_dir / f"{digest.hexdigest()[:40]}.npy"
    if cached.is_file():
        emb = np.load(cached)
        if emb.shape[0] == len(captions):
            return emb
    emb = embed_texts(captions, name=model, progress=progress and len(captions) > 20_000)
    with atomic_write(cached) as f:
        np.save(f, emb)
    return emb


class CorpusIndex:
    """Items and a FAISS inner-product index over their unit-norm caption embeddings."""

    def __init__(self, items: list[CorpusItem], embeddings: np.ndarray, model: str):
        self.items = items
        self.model = model
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))

    def search(self, query: str, k: int) -> list[tuple[CorpusItem, float]]:
        """The k items whose captions are nearest `query`, best first, with cosine scores."""
        k = min(k, len(self.items))
        if k <= 0:
            return []
        scores, ids = self.index.search(embed_texts([query], name=self.model), k)
        return [(self.items[i], float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


class CorpusEngine(Engine):
    """Pages are the next `max_results` captions by similarity."""

    name = "corpus"
    schemes = ("http", "https", "file")
    pages = True

    def __init__(self, path: str, cfg: CrawlConfig, progress: bool = True):
        self.path = Path(path).expanduser()
        self.progress = progress
        self.root = corpus_root(self.path)
        self.cfg = cfg
        self.items = list_corpus(self.path)
        if not self.items:
            raise ValueError(f"corpus {self.path} holds no images")
        self._index: CorpusIndex | None = None
        self._lock = asyncio.Lock()

    def build(self) -> CorpusIndex:
        """Embed the captions (or load them from the cache) and index them; once."""
        if self._index is None:
            cache_dir = Path(self.cfg.corpus_cache_dir).expanduser()
            emb = caption_embeddings([it.caption for it in self.items], self.cfg.corpus_text_model,
                                     cache_dir, progress=self.progress)
            self._index = CorpusIndex(self.items, emb, self.cfg.corpus_text_model)
        return self._index

    async def search(self, query: str, max_results: int, page: int = 1,
                     backend: str = "") -> SearchOutcome:
        check_refinement(self, page, backend)
        async with self._lock:
            index = self._index or await asyncio.to_thread(self.build)
        skip = (page - 1) * max_results
        hits = (await asyncio.to_thread(index.search, query, skip + max_results))[skip:]
        rows = [{"title": item.caption, "image": item.image, "width": item.width,
                 "height": item.height, "source": self.name} for item, _ in hits]
        return SearchOutcome(clean_results(rows, max_results, self.schemes, self.name))
