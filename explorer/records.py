"""The small records that flow one way through the loop (DESIGN.md §2).

policy -> Query (concept, text, refinement) -> engine -> SearchResult -> downloader -> FetchResult -> images -> Candidate
-> cache (an Outcome per URL attempt) -> reward -> QueryOutcome -> policy.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Outcome(str, enum.Enum):
    """What happened to one URL attempt. Every attempt gets exactly one, recorded in the DB."""

    OK = "ok"                             # stored, new
    DUPLICATE = "duplicate"               # same sha256 already in the cache
    NEAR_DUPLICATE = "near_duplicate"     # FAISS cosine >= threshold to a cached image
    TEST_LEAK = "test_leak"               # near-copy of a target *test* image: never kept
    HTTP_ERROR = "http_error"             # 4xx/5xx after retries
    TIMEOUT = "timeout"                   # connect or read timeout
    CONNECTION_ERROR = "connection_error" # refused, reset, DNS failure
    TOO_LARGE = "too_large"               # body over the byte cap (header or streamed)
    BOMB = "bomb"                         # decoded size over the pixel limit
    NOT_IMAGE = "not_image"               # magic bytes are not an image format we read
    CORRUPT = "corrupt"                   # truncated or undecodable image
    TOO_SMALL = "too_small"               # shorter side below the minimum
    BAD_ASPECT = "bad_aspect"             # aspect ratio beyond the limit
    FORBIDDEN_ADDRESS = "forbidden_address"  # resolves to a non-public address off the allow-list
    BAD_URL = "bad_url"                   # not http(s), unparsable
    ROBOTS = "robots"                     # X-Robots-Tag noai / noimageai
    REDIRECT_LIMIT = "redirect_limit"     # more than max_redirects hops, or a loop
    DISK_FULL = "disk_full"               # cache size cap reached or ENOSPC
    WORKER_LOST = "worker_lost"           # the fetch worker process died with this URL in flight
    DECODE_TIMEOUT = "decode_timeout"     # preparing the image took more CPU than crawl.prepare_timeout_s
    FORBIDDEN_PATH = "forbidden_path"     # file:// outside the corpus root, or not a regular file (device, FIFO)


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
    outcome: Outcome | None = None        # None = body fetched, not judged as an image yet
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
    copy_hash: bytes = b""                # copy hashes of the stored image (explorer/decontam.py)


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
