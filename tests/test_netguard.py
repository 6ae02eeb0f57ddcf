"""The address policy, as pure functions: nothing here opens a connection."""
import asyncio
import socket

import pytest

from explorer.crawl.netguard import ForbiddenAddress, GuardedResolver, check_url, is_public_address, normalise_allow, url_problem

NOT_PUBLIC = [
    "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.254",
    "224.0.0.1", "239.255.255.250", "0.0.0.0", "255.255.255.255", "127.0.0.1", "127.0.0.2",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1",
    "::1", "::", "ff02::1", "2002:7f00:1::1", "64:ff9b::a00:1", "198.18.0.1", "192.0.2.1",
    "::127.0.0.1", "::10.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b:1::a00:1",  # IPv4-compatible, SIIT, local NAT64
    "not an address", "",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2001:4860:4860::8888"]


@pytest.mark.parametrize("ip", NOT_PUBLIC)
def test_non_public_addresses_are_refused(ip):
    assert not is_public_address(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip):
    assert is_public_address(ip)


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/a.jpg", "http://169.254.169.254/latest/meta-data", "http://[::ffff:127.0.0.1]:8080/x",
    "http://[fe80::1]/x", "http://100.64.0.1/x", "http://224.0.0.1/x", "https://127.0.0.1/x",
    "http://localhost:8000/x", "http://a.localhost/x", "http://0.0.0.0/x",
])
def test_check_url_refuses_local_literals_and_names(url):
    forbidden, reason = url_problem(url)
    assert forbidden and reason == check_url(url)


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "javascript:alert(1)",
                                 "http:///nohost", "http://[::1/x", "gopher://x"])
def test_check_url_refuses_bad_urls(url):
    forbidden, _ = url_problem(url)
    assert not forbidden and check_url(url) is not None


def test_check_url_passes_public_and_allowed():
    assert check_url("https://example.com/a.jpg") is None
    assert check_url("http://8.8.8.8/a.jpg") is None
    allow = normalise_allow(["127.0.0.1:8080", "[::1]:9000"])
    assert check_url("http://127.0.0.1:8080/a.jpg", allow) is None
    assert check_url("http://[::1]:9000/a.jpg", allow) is None
    # only the exact host:port pair
    assert check_url("http://127.0.0.1:8081/a.jpg", allow) is not None
    assert check_url("http://127.0.0.2:8080/a.jpg", allow) is not None


def test_normalise_allow_rejects_garbage():
    with pytest.raises(ValueError):
        normalise_allow(["127.0.0.1"])
    with pytest.raises(ValueError):
        normalise_allow(["host:port"])


class FakeResolver:
    """Stands in for DNS: returns fixed answers, connects to nothing."""

    def __init__(self, answers):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.answers]

    async def close(self):
        pass


def test_resolver_refuses_names_that_resolve_to_private_addresses():
    resolver = GuardedResolver(frozenset(), FakeResolver(["10.0.0.5", "::ffff:127.0.0.1"]))
    with pytest.raises(ForbiddenAddress):
        asyncio.run(resolver.resolve("rebind.example", 80))


def test_resolver_drops_private_answers_and_keeps_public_ones():
    resolver = GuardedResolver(frozenset(), FakeResolver(["169.254.169.254", "93.184.216.34"]))
    hosts = asyncio.run(resolver.resolve("mixed.example", 80))
    assert [h["host"] for h in hosts] == ["93.184.216.34"]


def test_resolver_lets_allow_listed_pairs_through():
    resolver = GuardedResolver(normalise_allow(["sandbox.test:8080"]), FakeResolver(["127.0.0.1"]))
    assert asyncio.run(resolver.resolve("sandbox.test", 8080))[0]["host"] == "127.0.0.1"
    with pytest.raises(ForbiddenAddress):
        asyncio.run(resolver.resolve("sandbox.test", 8081))
