"""FAISS indexes over unit vectors: near-duplicate search in the cache, and decontamination
against the target's test images. Inner product on unit vectors = cosine similarity."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from cache.atomic import atomic_write
from cache.errors import CorruptRunState, first_line


class VectorIndex:
    """An exact inner-product index with our own integer ids (the DB's `images.vec_id`)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> "VectorIndex":
        """An index of [N, D] vectors with ids 0..N-1 (e.g. the target's test images, for decontamination)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        index = cls(vectors.shape[1])
        index.add(vectors, np.arange(len(vectors)))
        return index

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """vectors: [N, dim] unit-norm float32; ids: [N] int64."""
        if len(vectors):
            self.index.add_with_ids(_as_matrix(vectors, self.dim), np.asarray(ids, dtype=np.int64))

    def search(self, vectors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Best k matches for each of [N, dim] -> (similarities [N, k], ids [N, k]; -1 where none)."""
        q = _as_matrix(vectors, self.dim)
        if self.index.ntotal == 0 or len(q) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        sims, ids = self.index.search(q, k)
        sims[ids < 0] = -np.inf
        return sims, ids

    def max_similarity(self, vectors: np.ndarray) -> np.ndarray:
        """[N, dim] -> [N] highest cosine to anything in the index (-inf when empty)."""
        return self.search(vectors, 1)[0][:, 0]

    def ids(self) -> np.ndarray:
        """Every id held: [ntotal] int64."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def save(self, path: str | Path) -> None:
        """Write to a temp file, fsync, rename: a crash leaves the old index or the new one."""
        with atomic_write(path) as f:
            f.write(faiss.serialize_index(self.index).tobytes())

    @classmethod
    def load(cls, path: str | Path, dim: int) -> "VectorIndex":
        """The index saved at `path`, or an empty one if there is none (or it has another dim)."""
        out = cls(dim)
        path = Path(path)
        if path.exists():
            index = read_index(path)
            if index.d == dim:
                out.index = index
        return out


def read_index(path: str | Path) -> faiss.Index:
    """The FAISS index saved at `path`; a truncated or foreign file is CorruptRunState."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:  # faiss's word for a file it cannot parse
        raise CorruptRunState(f"cannot read the FAISS index {path} ({first_line(e)}): delete it, and "
                              "the next run or fetch rebuilds it from the cached images") from e


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))
    return v
