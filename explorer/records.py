"""The small records that flow one way through the loop (ARCHITECTURE.md, "One round").

policy -> Query (concept, text, refinement) -> engine -> SearchResult -> downloader -> FetchResult -> images -> Candidate
-> cache (a UrlOutcome per URL attempt) -> reward -> QueryOutcome -> policy.
`UrlOutcome` is the cache's (cache/outcomes.py): what it records for each URL attempt. Three
outcomes, three names: `UrlOutcome` (one URL), `SearchOutcome` (one search, explorer/engines) and
`QueryOutcome` (one finished query, as the policy learns it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cache.outcomes import UrlOutcome  # (the attempts table's vocabulary; re-exported here for the loop)


@dataclass(frozen=True)
class SearchResult:
    """One image result, with the keys ddgs's `DDGS().images()` returns."""

    title: str
    image: str                            # URL of the full image
    thumbnail: str = ""
    url: str = ""                         # page the image is on
    height: int = 0
    width: int = 0
    source: str = ""                      # engine that returned it (ddgs backend name, "sandbox")

    @classmethod
    def from_dict(cls, d: dict) -> "SearchResult":
        def as_int(v) -> int:
            try:
                return int(v)
            except (TypeError, ValueError):
                return 0

        return cls(
            title=str(d.get("title") or ""),
            image=str(d.get("image") or ""),
            thumbnail=str(d.get("thumbnail") or ""),
            url=str(d.get("url") or ""),
            height=as_int(d.get("height")),
            width=as_int(d.get("width")),
            source=str(d.get("source") or ""),
        )


@dataclass
class FetchResult:
    """What the downloader got for one URL: a body, or an outcome that says why not."""

    url: str
    outcome: UrlOutcome | None = None        # None = body fetched, not judged as an image yet
    reason: str = ""
    body: bytes | None = None
    status: int = 0
    final_url: str = ""
    redirects: int = 0
    elapsed_s: float = 0.0


@dataclass
class Candidate:
    """A validated, resized image ready for the cache."""

    sha256: str                           # of the stored (re-encoded) bytes
    data: bytes                           # stored bytes (JPEG)
    width: int                            # stored size
    height: int
    orig_width: int
    orig_height: int
    url: str = ""
    caption: str = ""
    query_id: int | None = None
    copy_hash: bytes = b""                # copy hashes of the stored image (explorer/crawl/decontam.py)


@dataclass(frozen=True)
class Query:
    """What the policy asks: a concept, the text sent, and how it refines an earlier ask of
    that concept (policies/refine.py): "" for its first ask, "page:P" (results page P),
    "backend:NAME" (another image source of the engine), "desc:TEXT" (a descriptor's text)."""

    concept: str
    text: str
    refinement: str = ""
    page: int = 1
    backend: str = ""


@dataclass
class QueryOutcome:
    """A finished query, as the policy sees it."""

    concept: str
    text: str
    round: int
    n_results: int
    n_kept: int
    reward: float                         # mean over kept images, or the floor
    image_rewards: list[float] = field(default_factory=list)
    refinement: str = ""                  # as in Query
