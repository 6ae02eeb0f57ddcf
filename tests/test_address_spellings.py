"""The address guard judges the host the HTTP client connects to, however the URL spells it.

Pure functions only: `connected_address` works out, from what aiohttp does, which address a
request would reach, and nothing here opens a connection or asks DNS.
"""
import ipaddress
import socket

import pytest
from aiohttp.helpers import is_ip_address
from hypothesis import HealthCheck, example, given, settings, strategies as st
from yarl import URL

from explorer.crawl.netguard import is_public_address, normalise_allow, url_problem

ALLOW = normalise_allow(["127.0.0.1:8080", "[::1]:9000"])

# Decimal digits of several scripts (UTS46 folds some to ASCII, e.g. fullwidth and mathematical
# bold; others, e.g. Arabic-Indic, become punycode names) and the full stops it folds to ".".
DIGIT_ZEROS = [ord("0"), 0xFF10, 0x1D7CE, 0x1D7D8, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1040]
DOTS = [".", "\u3002", "\uff0e", "\uff61"]
ADDRESSES = ["127.0.0.1", "127.0.0.2", "10.0.0.1", "169.254.169.254", "0.0.0.0", "192.168.1.1", "100.64.0.1",
             "224.0.0.1", "255.255.255.255", "8.8.8.8", "93.184.216.34", "1.1.1.1"]


def connected_address(url: URL) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address aiohttp's connection for `url` reaches without DNS, or None when the host
    is a name that goes to the resolver (or nothing a socket can connect to).

    aiohttp connects to `url.raw_host` (trailing dots collapsed to one). A host that its
    `is_ip_address` takes for an IP goes straight to the socket, which reads it as the C
    library does; any other host goes to the resolver, whose getaddrinfo reads a numeric
    name the same way before it would ask DNS. AI_NUMERICHOST is that reading, offline.
    """
    host = url.raw_host or ""
    if host.endswith(".."):
        host = host.rstrip(".") + "."
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0].split("%")[0])


def address_allowed(ip, port: int) -> bool:
    """The verdict on the address itself: public, or the allow-listed pair."""
    return is_public_address(ip) or (str(ip), port) in ALLOW


# -- spellings ---------------------------------------------------------------------------------
def in_script(text: str, zero: int) -> str:
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


@st.composite
def ipv4_spellings(draw) -> str:
    """One IPv4 address written the many ways a URL parser or the C library may accept."""
    ip = ipaddress.IPv4Address(draw(st.sampled_from(ADDRESSES) | st.ip_addresses(v=4).map(str)))
    octets = [int(o) for o in str(ip).split(".")]
    form = draw(st.sampled_from(["quad", "decimal", "octal", "hex", "short3", "short2", "padded"]))
    if form == "quad":
        parts = [str(o) for o in octets]
    elif form == "decimal":
        parts = [str(int(ip))]
    elif form == "octal":
        parts = ["0%o" % o for o in octets]
    elif form == "hex":
        parts = [draw(st.sampled_from(["0x", "0X"])) + "%x" % o for o in octets]
    elif form == "short3":
        parts = [str(octets[0]), str(octets[1]), str(octets[2] * 256 + octets[3])]
    elif form == "short2":
        parts = [str(octets[0]), str(int(ip) & 0xFFFFFF)]
    else:
        parts = ["%03d" % o for o in octets]
    dots = draw(st.lists(st.sampled_from(DOTS), min_size=len(parts), max_size=len(parts)))
    text = "".join(p + d for p, d in zip(parts, dots))[:-1]
    if draw(st.booleans()):
        text += draw(st.sampled_from(DOTS)) * draw(st.integers(1, 2))  # trailing dots
    return in_script(text, draw(st.sampled_from(DIGIT_ZEROS)))


@st.composite
def ipv6_spellings(draw) -> str:
    ip = draw(st.sampled_from([ipaddress.IPv6Address(a) for a in ("::1", "::", "fe80::1", "fd00::1", "2606:4700::1111")])
              | st.ip_addresses(v=6))
    v4 = ipaddress.IPv4Address(draw(st.sampled_from(ADDRESSES)))
    text = draw(st.sampled_from([str(ip), ip.exploded, f"::ffff:{v4}", f"::{v4}", f"::ffff:0:{v4}",
                                 f"64:ff9b::{v4}", f"64:ff9b:1::{v4}", f"2002:{int(v4) >> 16:x}:{int(v4) & 0xFFFF:x}::1"]))
    if draw(st.booleans()):
        text = text.upper()
    if draw(st.booleans()):
        text += "%25" + draw(st.sampled_from(["lo", "eth0", "1"]))
    return f"[{text}]"


def percent_escape(text: str, which: list[bool]) -> str:
    return "".join("%{:02X}".format(ord(c)) if w and ord(c) < 128 else c for c, w in zip(text, which + [False] * len(text)))


@st.composite
def spelled_urls(draw) -> str:
    host = draw(ipv4_spellings() | ipv6_spellings() | st.sampled_from(["localhost", "LOCALHOST.", "a.localhost", "example.com"]))
    if draw(st.integers(0, 9)) == 0:
        host = percent_escape(host, draw(st.lists(st.booleans(), max_size=len(host))))
    port = draw(st.sampled_from(["", ":80", ":8080", ":9000", ":443"]))
    port = in_script(port, draw(st.sampled_from(DIGIT_ZEROS[:3])))
    userinfo = draw(st.sampled_from(["", "user@", "u:p@", "127.0.0.1:8080@"]))
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    return f"{scheme}://{userinfo}{host}{port}/a.jpg"


# -- the property ------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelled_urls())
@example("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff12:8080/a.jpg")
@example("http://127\uff0e0\uff0e0\uff0e1:\uff18\uff10\uff18\uff11/a.jpg")
@example("http://2130706434/a.jpg")
@example("http://0177.0.0.1:8080/a.jpg")
@example("http://0x7f.1/a.jpg")
@example("http://127.1:8080/a.jpg")
@example("http://[::127.0.0.1]/a.jpg")
@example("http://[::ffff:0:7f00:1]/a.jpg")
def test_the_guard_judges_the_address_the_client_connects_to(url):
    """Whatever the spelling, the guard never lets through an address whose own verdict is no,
    and it says yes exactly when that verdict is yes for the address's canonical spelling.
    Other spellings of an allowed address (decimal, octal, short, trailing dot) are refused too:
    the guard does not leave them to the client."""
    problem = url_problem(url, ALLOW)
    try:
        parsed = URL(url)
        parsed.port
    except ValueError:  # the client refuses it too
        assert problem is not None and not problem[0], problem
        return
    address = connected_address(parsed)
    host = parsed.raw_host
    if address is None:  # a name: the resolver judges its answers; no IP literal slips past as a name
        assert problem is not None or not is_ip_address(host), (host, problem)
        return
    allowed = address_allowed(address, parsed.port)
    if problem is None:
        assert allowed, (host, address)
    if not allowed:
        assert problem is not None and problem[0], (host, address, problem)
    if host == str(address):
        assert (problem is None) == allowed, (host, address, problem)


@pytest.mark.parametrize("url", [
    "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff12/x",       # fullwidth digits, ideographic stops
    "http://127\uff61\uff10\uff61\uff10\uff61\uff11:8081/x",               # halfwidth stops, fullwidth digits
    "http://\U0001d7cf\U0001d7d0\U0001d7d5.0.0.1/x",                      # mathematical bold digits
    "http://127.0.0.1:\uff18\uff10\uff18\uff11/x",                        # a fullwidth port off the list
    "http://2130706433:8080/x", "http://0177.0.0.1:8080/x", "http://0x7f.1:8080/x", "http://127.1:8080/x",
    "http://017700000001/x", "http://127.0.0.1.:8080/x", "http://127.0.0.1../x",
    "http://[::127.0.0.1]/x", "http://[::7f00:1]/x", "http://[::10.0.0.1]/x", "http://[::ffff:0:a9fe:a9fe]/x",
    "http://[64:ff9b:1::a00:1]/x", "http://[::1%25lo]:9000/x",
])
def test_unicode_and_legacy_spellings_of_local_addresses_are_forbidden(url):
    problem = url_problem(url, ALLOW)
    assert problem is not None and problem[0], problem


@pytest.mark.parametrize("url", ["http://8.8.8.08/x", "http://134744072/x", "http://0x8.8.8.8/x", "http://8.8.2056/x",
                                 "http://1.2.3.4.5/x", "http://999.1.1.1/x", "http://example.123/x"])
def test_non_canonical_spellings_of_public_addresses_are_bad_urls(url):
    problem = url_problem(url)
    assert problem is not None and not problem[0], problem


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11:8080/x",
                                 "http://[::1]:9000/x", "http://[0:0:0:0:0:0:0:1]:9000/x", "http://8.8.8.8/x",
                                 "http://[2606:4700:4700::1111]/x", "http://xn--zca.de/x", "http://\u00df.de/x"])
def test_canonical_or_folded_spellings_of_allowed_addresses_pass(url):
    assert url_problem(url, ALLOW) is None


@pytest.mark.parametrize("url", ["http://a b/x", "http://a%2fb/x", "http://ex\x00ample.com/x", "http://[::1/x",
                                 "http://h:99999/x", "http://h:port/x", "http://[::1]:80:9/x"])
def test_hosts_the_client_cannot_use_are_bad_urls(url):
    problem = url_problem(url)
    assert problem is not None and not problem[0], problem
