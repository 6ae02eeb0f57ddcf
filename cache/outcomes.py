"""What became of one URL attempt: the vocabulary of the `attempts` table's `outcome` column.

It belongs to storage, which records it and checks it (cache/verify.py); the crawl and the
loop use it through explorer.records.
"""
from __future__ import annotations

import enum


class UrlOutcome(str, enum.Enum):
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
