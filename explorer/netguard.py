"""Which addresses the crawler may reach (DESIGN.md §5).

Only public addresses are fetched, plus an explicit allow-list of `host:port` pairs (the
sandbox on loopback). The check runs twice: on the URL (IP literals, which aiohttp connects
to without resolving) and on every DNS answer (`GuardedResolver`), so a name that resolves,
or re-resolves, to a private address is refused before any connection is made.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: embeds an IPv4 address


class ForbiddenAddress(OSError):
    """Raised by the resolver when every DNS answer is a non-public address."""


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host string spells (brackets and zone ids allowed), or None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public_address(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when `ip` is a globally routable unicast address.

    IPv4-mapped (::ffff:a.b.c.d), 6to4 and NAT64 forms are unwrapped first, because
    `ipaddress` judges `::ffff:127.0.0.1` by its IPv6 form; `is_global` already excludes
    100.64.0.0/10 (CGNAT), and multicast is excluded explicitly (224.0.0.1 is "global").
    """
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return False
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.teredo is not None:
            return False
    return bool(ip.is_global and not ip.is_multicast)


def normalise_allow(allow: list[str] | tuple[str, ...] | set[str]) -> frozenset[tuple[str, int]]:
    """`["127.0.0.1:8080", "[::1]:9000", "localhost:80"]` -> {(host, port)}; bad entries raise ValueError."""
    pairs = set()
    for entry in allow:
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--allow expects HOST:PORT, got {entry!r}")
        pairs.add((host.strip("[]").lower(), int(port)))
    return frozenset(pairs)


def url_problem(url: str, allow: frozenset[tuple[str, int]] = frozenset()) -> tuple[bool, str] | None:
    """(is_forbidden_address, reason) when `url` may not be fetched, else None.

    Only http(s) with a host; an IP-literal host must be public unless (host, port) is on
    the allow-list, and `localhost` names are refused without asking DNS. Other host names
    pass here and are judged by `GuardedResolver`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError as e:
        return False, f"unparsable URL: {e}"
    if parts.scheme.lower() not in DEFAULT_PORTS:
        return False, f"scheme {parts.scheme or '(none)'!r} is not http(s)"
    host = (parts.hostname or "").lower()
    if not host:
        return False, "no host"
    if (host, port) in allow:
        return None
    ip = parse_ip(host)
    if ip is not None and not is_public_address(ip):
        return True, f"address {ip} is not public"
    name = host.rstrip(".")
    if ip is None and (name == "localhost" or name.endswith(".localhost")):
        return True, f"host {host} is local"
    return None


def check_url(url: str, allow: frozenset[tuple[str, int]] = frozenset()) -> str | None:
    """Why `url` may not be fetched, or None when it may (DNS answers are checked later)."""
    problem = url_problem(url, allow)
    return problem[1] if problem else None


class GuardedResolver(AbstractResolver):
    """A resolver that drops non-public DNS answers (allow-listed host:port pairs excepted).

    Raises `ForbiddenAddress` when nothing public is left, which aiohttp surfaces as a
    `ClientConnectorDNSError` whose `os_error` is that exception.
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
