"""Fault profiles of the sandbox web: what can go wrong with a URL, and how often.

A fault is a property of the URL: `image_fault(seed, profile, path)` hashes (seed, path) to a
number in [0, 1) and walks the profile's cumulative rates, so the same image URL always gets the
same fault and tests can compute the expected share of each kind without any HTTP. Searches are
rate-limited per attempt instead (`search_fault(..., attempt)`), so that a retried search
eventually gets through, as it does on a real engine; the outage profiles count every search
the server answers instead (`search_outage`), so that retries do not get through.
"""
from __future__ import annotations

from explorer.sandbox.world import unit

# image-route fault kinds, in the order the rates are accumulated
IMAGE_FAULTS = (
    "http_404",            # Not Found
    "http_500",            # Internal Server Error
    "stall",               # silence for `stall_s`, before the headers or after a few bytes
    "truncated",           # half a file: as a whole response, or short of its Content-Length
    "wrong_content_type",  # a good image labelled text/html (sniffing must accept it)
    "html_as_image",       # an HTML page labelled image/jpeg (sniffing must reject it)
    "bomb",                # a small PNG whose header claims 30000 x 30000 pixels
    "oversize",            # 25 MB of junk with its Content-Length
    "oversize_chunked",    # 25 MB of junk, chunked, no Content-Length
    "gzip_bomb",           # Content-Encoding: gzip that inflates past the byte cap
    "redirect_loop",       # 302s that never end
    "redirect_forbidden",  # 302 to loopback off the allow-list: 127.0.0.2, [::1], [::ffff:127.0.0.2]
    "redirect_ok",         # one 302 to the same image (to be followed)
    "x_robots",            # a good image with X-Robots-Tag: noai
)
SEARCH_FAULTS = ("http_429", "http_202")
# Profiles in which the search engine itself is unavailable, whatever the query: "throttled"
# alternates windows of THROTTLE_WINDOW searches that all answer 429 or an empty 202 (the
# first window shut) with windows that answer; "down" fails every search with a 503.
SEARCH_OUTAGES = ("throttled", "down")
THROTTLE_WINDOW = 24

PROFILES: dict[str, dict[str, float]] = {
    "none": {},
    "realistic": {
        "http_404": 0.02, "http_500": 0.01, "stall": 0.002, "truncated": 0.005,
        "wrong_content_type": 0.02, "html_as_image": 0.005, "bomb": 0.001, "oversize": 0.001,
        "oversize_chunked": 0.001, "gzip_bomb": 0.001, "redirect_loop": 0.002,
        "redirect_forbidden": 0.001, "redirect_ok": 0.02, "x_robots": 0.01,
        "http_429": 0.03, "http_202": 0.02,
    },
    "hostile": {
        "http_404": 0.06, "http_500": 0.05, "stall": 0.03, "truncated": 0.05,
        "wrong_content_type": 0.05, "html_as_image": 0.04, "bomb": 0.03, "oversize": 0.02,
        "oversize_chunked": 0.02, "gzip_bomb": 0.02, "redirect_loop": 0.03,
        "redirect_forbidden": 0.04, "redirect_ok": 0.03, "x_robots": 0.03,
        "http_429": 0.2, "http_202": 0.1,
    },
    "throttled": {},
    "down": {},
}


def check_profile(profile: str) -> dict[str, float]:
    if profile not in PROFILES:
        raise ValueError(f"unknown sandbox fault profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def _pick(u: float, kinds: tuple[str, ...], rates: dict[str, float]) -> str | None:
    edge = 0.0
    for kind in kinds:
        edge += rates.get(kind, 0.0)
        if u < edge:
            return kind
    return None


def image_fault(seed: int, profile: str, path: str) -> str | None:
    """The fault an image URL path (e.g. "/img/c12v3.jpg") always gets, or None."""
    return _pick(unit(seed, "fault", path), IMAGE_FAULTS, check_profile(profile))


def search_fault(seed: int, profile: str, query_key: str, attempt: int) -> str | None:
    """The fault of the `attempt`-th request (0-based) of one search, or None."""
    return _pick(unit(seed, "search-fault", query_key, attempt), SEARCH_FAULTS, check_profile(profile))


def search_outage(seed: int, profile: str, n: int, window: int = THROTTLE_WINDOW) -> str | None:
    """The fault of the server's `n`-th search request (0-based, any query) when the profile
    makes the engine unavailable, or None. Counting requests, not seconds, keeps it
    deterministic."""
    check_profile(profile)
    if profile == "down":
        return "http_503"
    if profile == "throttled" and (n // window) % 2 == 0:
        return ("http_429", "http_202")[int(unit(seed, "throttle", n) * 2)]
    return None


def variant(seed: int, path: str, choices: int) -> int:
    """A deterministic choice among a fault's variants (e.g. which forbidden address)."""
    return int(unit(seed, "variant", path) * choices)
