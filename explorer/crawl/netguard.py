"""Which addresses the crawler may reach (ARCHITECTURE.md, "Guards").

Only public addresses are fetched, plus an explicit allow-list of `host:port` pairs (the
sandbox on loopback). The check runs twice: on the URL (IP literals, which aiohttp connects
to without resolving) and on every DNS answer (`GuardedResolver`), so a name that resolves,
or re-resolves, to a private address is refused before any connection is made.

The URL is judged as the HTTP client will use it: `parse_url` is yarl's parse, the one
aiohttp makes, and the downloader hands that very `yarl.URL` to aiohttp. yarl folds hosts
(IDNA/UTS46: fullwidth digits, ideographic full stops) and ports (`:８０`), so a host that a
plain string check takes for a name can reach aiohttp as an IP literal; judging the parsed
host leaves no gap. Numeric hosts other than the canonical dotted quad (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`, `127.0.0.1.`) are refused here, whatever aiohttp would do:
the C library turns them into addresses. They are `forbidden_address` when the address they
spell is not public, `bad_url` otherwise.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")
# IPv6 prefixes that carry an IPv4 address in their low 32 bits: IPv4-compatible (::a.b.c.d),
# SIIT-translated (::ffff:0:a.b.c.d) and NAT64 (well-known and local-use). `ipaddress`
# judges these by their IPv6 form, which it calls global.
EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48"))
NAME = re.compile(r"[a-z0-9_.-]+")  # what a host name is made of once yarl has IDNA-encoded it
HEX_LABEL = re.compile(r"0x[0-9a-f]*")


class ForbiddenAddress(OSError):
    """Raised by the resolver when every DNS answer is a non-public address."""


class Refusal(NamedTuple):
    """Why a URL may not be fetched: a non-public address (`forbidden`), or a bad URL."""

    forbidden: bool
    reason: str


def parse_ip(host: str) -> IPAddress | None:
    """The IP address a host string spells (brackets and zone ids allowed), or None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in EMBEDS_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: str | IPAddress) -> bool:
    """True when `ip` is a globally routable unicast address.

    IPv6 forms that embed an IPv4 address are judged by it (`embedded_ipv4`), because
    `ipaddress` judges `::ffff:127.0.0.1` by its IPv6 form; `is_global` already excludes
    100.64.0.0/10 (CGNAT), and multicast is excluded explicitly (224.0.0.1 is "global").
    """
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return False
        ip = embedded_ipv4(ip) or ip
    return bool(ip.is_global and not ip.is_multicast)


def normalise_allow(allow: list[str] | tuple[str, ...] | set[str]) -> frozenset[tuple[str, int]]:
    """`["127.0.0.1:8080", "[::1]:9000", "localhost:80"]` -> {(host, port)}; bad entries raise ValueError.

    IP addresses are kept in their canonical spelling, the one `url_problem` compares."""
    pairs = set()
    for entry in allow:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isascii() or not port.isdigit():
            raise ValueError(f"--allow expects HOST:PORT, got {entry!r}")
        host = host.strip("[]").lower()
        ip = parse_ip(host)
        pairs.add((str(ip) if ip is not None and "%" not in host else host, int(port)))
    return frozenset(pairs)


def parse_url(url: str | URL) -> URL:
    """`url` parsed as aiohttp parses it (yarl); ValueError when yarl refuses it."""
    if isinstance(url, URL):
        return url
    try:
        return URL(url)
    except (ValueError, TypeError, UnicodeError) as e:  # UnicodeError: IDNA refusing a label
        raise ValueError(str(e) or type(e).__name__) from None


def numeric_address(host: str) -> IPAddress | None:
    """The address the C library reads `host` as, without asking DNS (AI_NUMERICHOST), or None.

    This is what a socket connects to when it is handed `host` as an address: it accepts the
    legacy IPv4 spellings (`127.1`, `0x7f.1`, `2130706433`, octal octets)."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):  # not numeric; or a NUL, an unencodable character
        return None
    return parse_ip(infos[0][4][0]) if infos else None


def looks_numeric(host: str) -> bool:
    """True for hosts that something on the way may take for an IPv4 address: aiohttp's own
    test (digits and dots), a last label that is a number (WHATWG URL: such a host is IPv4),
    or anything the C library reads as an address."""
    last = host.rstrip(".").rpartition(".")[2]
    return (host.replace(".", "").isdigit() or last.isdigit() or HEX_LABEL.fullmatch(last) is not None
            or numeric_address(host) is not None)


def host_problem(host: str, port: int, allow: frozenset[tuple[str, int]] = frozenset()) -> Refusal | None:
    """Why the client may not connect to `host` (yarl's `raw_host`) on `port`, or None.

    IP literals must be public or allow-listed; names pass here (`GuardedResolver` judges
    their DNS answers) unless they are local or no DNS name."""
    if ":" in host:  # IPv6, yarl has checked and compressed it
        ip = parse_ip(host)
        if ip is None:
            return Refusal(False, f"host {host[:100]} is not an IPv6 address")
        if "%" in host:  # a zone id names one of this machine's interfaces: never the web's
            return Refusal(True, f"address {host} has a zone id")
        if (str(ip), port) in allow or is_public_address(ip):
            return None
        return Refusal(True, f"address {ip} is not public")
    if looks_numeric(host):
        return ipv4_problem(host, port, allow)
    if (host, port) in allow:
        return None
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return Refusal(True, f"host {host} is local")
    if not NAME.fullmatch(host):
        return Refusal(False, f"host {host[:100]!r} is not a DNS name")
    return None


def ipv4_problem(host: str, port: int, allow: frozenset[tuple[str, int]]) -> Refusal | None:
    """A numeric host: only the canonical dotted quad is judged as an address; other
    spellings are refused, and say what they would have reached."""
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        ip = None
    if ip is not None and str(ip) == host:
        if (host, port) in allow or is_public_address(ip):
            return None
        return Refusal(True, f"address {ip} is not public")
    spelled = numeric_address(host) or numeric_address(host.rstrip("."))
    if spelled is not None and not is_public_address(spelled):
        return Refusal(True, f"host {host} spells non-public address {spelled}")
    return Refusal(False, f"host {host[:100]} is not a canonical IPv4 address")


def guard_url(url: str | URL, allow: frozenset[tuple[str, int]] = frozenset()) -> tuple[URL | None, Refusal | None]:
    """(the URL the client is to request, None) when `url` may be fetched, else (parsed or
    None, why not). Only http(s) with a host; the host as `host_problem` judges it."""
    try:
        parsed = parse_url(url)
    except ValueError as e:
        return None, Refusal(False, f"unparsable URL: {e}"[:300])
    if parsed.scheme not in SCHEMES:
        return parsed, Refusal(False, f"scheme {parsed.scheme or '(none)'!r} is not http(s)")
    host, port = parsed.raw_host, parsed.port
    if not host or port is None:
        return parsed, Refusal(False, "no host")
    if host.endswith(".."):  # aiohttp connects to this host with one trailing dot
        host = host.rstrip(".") + "."
    return parsed, host_problem(host, port, allow)


def url_problem(url: str | URL, allow: frozenset[tuple[str, int]] = frozenset()) -> Refusal | None:
    """(is_forbidden_address, reason) when `url` may not be fetched, else None."""
    return guard_url(url, allow)[1]


def check_url(url: str | URL, allow: frozenset[tuple[str, int]] = frozenset()) -> str | None:
    """Why `url` may not be fetched, or None when it may (DNS answers are checked later)."""
    problem = url_problem(url, allow)
    return problem.reason if problem else None


class GuardedResolver(AbstractResolver):
    """A resolver that drops non-public DNS answers (allow-listed host:port pairs excepted).

    Raises `ForbiddenAddress` when nothing public is left, which aiohttp surfaces as a
    `ClientConnectorDNSError` whose `os_error` is that exception. `inner` does the asking
    (the system resolver, in a thread, by default).
    """

    def __init__(self, allow: frozenset[tuple[str, int]], inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if (host.strip("[]").lower(), port) in self.allow:
            return answers
        public = [a for a in answers if is_public_address(a["host"])]
        if not public:
            shown = ", ".join(sorted({a["host"] for a in answers})) or "nothing"
            raise ForbiddenAddress(f"{host} resolves to non-public {shown}")
        return public

    async def close(self) -> None:
        await self.inner.close()
