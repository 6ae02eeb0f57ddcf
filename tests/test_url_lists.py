"""`explore fetch` on URL lists full of garbage: the command ends normally, and every URL that
the list holds gets exactly one recorded attempt with an outcome.

Traffic stays on loopback: hosts are the sandbox (allowed), its forbidden listeners (refused),
or garbage. Names are answered by a resolver that never asks DNS, and in the fuzz nothing
counts as public, so no generated address can be fetched unless it is the sandbox.
"""
import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from cli import app
from explorer.crawl import netguard
from explorer.crawl.url_lists import read_url_list
from explorer.records import UrlOutcome
from explorer.sandbox.server import start_sandbox
from cache.db import MetaDB
from tests.test_downloader import OfflineResolver, bold, fullwidth

runner = CliRunner()
OUTCOMES = {o.value for o in UrlOutcome}


@pytest.fixture(scope="module")
def web():
    with start_sandbox(seed=5, profile="none") as server:
        with urllib.request.urlopen(f"{server.url}/search?q=red+rose&max_results=3", timeout=10) as resp:
            server.images = [r["image"] for r in json.load(resp)]
        yield server


def explore_fetch(web, lines: list[str], cache_dir: Path, pool: str = "thread"):
    """`explore fetch` of `lines` into `cache_dir`: (CLI result, the URLs read_url_list kept)."""
    urls = cache_dir / "urls.txt"
    urls.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    kept = [it.url for it in read_url_list(urls)]
    result = runner.invoke(app, ["fetch", str(urls), "--cache-dir", str(cache_dir / "cache"), "--allow", web.host_port,
                                 "--json", "--set", f"crawl.pool={pool}", "--set", "crawl.workers=2",
                                 "--set", "crawl.retries=0", "--set", "crawl.connect_timeout_s=2",
                                 "--set", "crawl.read_timeout_s=2", "--set", "crawl.total_timeout_s=5"])
    return result, kept


def forget_attempts(cache_dir: Path) -> None:
    """A fresh database and index for the next list; the image folders stay (making their
    hundreds of folders again is most of a small fetch's time)."""
    for path in (cache_dir / "cache").glob("explore.db*"):
        path.unlink()
    shutil.rmtree(cache_dir / "cache" / "index", ignore_errors=True)


def assert_one_outcome_per_url(result, kept: list[str], cache_dir: Path) -> None:
    assert result.exception is None and result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.output.splitlines()[-1])["attempted"] == len(set(kept))
    db = MetaDB(cache_dir / "cache" / "explore.db")
    try:
        rows = list(db.attempts_for_urls(kept))
    finally:
        db.close()
    by_url: dict[str, list] = {}
    for row in rows:
        by_url.setdefault(row.url, []).append(row.outcome)
    assert set(by_url) == set(kept)
    for url, outcomes in by_url.items():
        assert len(outcomes) == 1 and outcomes[0] in OUTCOMES, (url, outcomes)


# -- URL-shaped garbage --------------------------------------------------------------------------
# Characters that delimit URLs, and some that NFKC turns into delimiters (fullwidth solidus and
# colon, small commercial at, the account-of sign): URL parsers refuse or fold each differently.
URL_CHARS = "[]:@%/?#.\\ 0a\u00df\uff0f\uff1a\ufe6b\u2100\u3002\uff11"

def hosts(web) -> st.SearchStrategy[str]:
    """The sandbox (allowed), the forbidden listeners, folded spellings of both, and garbage."""
    port = web.host_port.rpartition(":")[2]
    listeners = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in web.forbidden.items()]
    local = ["127.0.0.2", "127.0.0.1", "0.0.0.0", "10.0.0.1", "169.254.169.254"]
    return st.one_of(
        st.sampled_from([web.host_port, f"{fullwidth('127.0.0.1')}:{port}", f"127.0.0.1:{fullwidth(port)}",
                         *listeners, "[::1]", "[::ffff:127.0.0.2]", "[::127.0.0.1]", "[::1%25lo]", "localhost",
                         "2130706433", "0x7f.1", "127.1", "0177.0.0.1", "127.0.0.1.", "127.0.0.1..",
                         "\u00df.test", "xn--zz", "xn--", "a..b", ".", "..", "[", "]", "[]", "[::1", "::1]", "[v1.x]",
                         "h:99999", "h:-1", "h:port", "h:", ":80", "@", "a@b@c", "%31%32%37.0.0.1", "%zz", "%00",
                         "a b", "\x00", "\t", " ", "\u3000", "\u200b", "\ufffd", "\u0661\u0662\u0667.\u0660.\u0660.\u0661"]),
        st.sampled_from(local).map(fullwidth), st.sampled_from(local).map(bold),
        st.sampled_from(local).flatmap(lambda h: st.sampled_from([f"{h}:{port}", f"{h}:80", h])),
        st.text(max_size=20),
        st.text(alphabet=URL_CHARS, max_size=16),
        st.from_regex(r"[a-z0-9.\-_%]{1,20}(:[0-9]{0,6})?", fullmatch=True),
        st.from_regex(r"\[?[0-9a-f:.%]{0,12}\]?(:[0-9]{0,6})?", fullmatch=True),  # IPv6-ish, brackets unbalanced
    )


def urls(web) -> st.SearchStrategy[str]:
    scheme = st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "javascript:", "mailto:", "//",
                              "http:/", "http:", "", "h\u0074tp://", "http ://"]) | st.text(max_size=8)
    userinfo = st.sampled_from(["", "", "user@", "u:p@", ":@", "u%40x@", f"{web.host_port}@", "\u00fc@"])
    path = st.sampled_from(["", "/", "/a.jpg", "/img/x.jpg", "/%zz", "/%00", "/a b.jpg", "/\u00e9.png", "/..%2f..",
                            "?q=[", "#frag", "/a\x0bb"]) | st.text(max_size=12).map(lambda t: "/" + t)
    return st.one_of(
        st.tuples(scheme, userinfo, hosts(web), path).map("".join),
        st.sampled_from(web.images),
        st.sampled_from(web.images).map(lambda u: u.replace("127.0.0.1", fullwidth("127.0.0.1"))),
        st.text(max_size=40),                                              # anything at all
    )


def lines(web) -> st.SearchStrategy[list[str]]:
    space = st.sampled_from(["", "", " ", "\t", "  \t"])
    line = st.tuples(space, urls(web), space, st.sampled_from(["", "", "\tcaption", "\t", "\t\tx"])).map("".join)
    return st.lists(line | st.sampled_from(["", "#comment", "\tcaption only"]), min_size=1, max_size=12)


@pytest.fixture
def offline(monkeypatch):
    """No DNS, and no address counts as public: only the allow-listed sandbox can be fetched."""
    monkeypatch.setattr(netguard, "ThreadedResolver", lambda: OfflineResolver("127.0.0.3"))
    monkeypatch.setattr(netguard, "is_public_address", lambda ip: False)


def test_url_lists_of_anything_end_normally_with_one_outcome_per_url(web, offline, tmp_path):
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
    @given(lines(web))
    def check(listed):
        forget_attempts(tmp_path)
        result, kept = explore_fetch(web, listed, tmp_path)
        assert_one_outcome_per_url(result, kept, tmp_path)

    check()
    assert sum(web.stats()["forbidden_hits"].values()) == 0


NASTY = [  # hosts here never reach a resolver: the guard refuses them first (process workers ask real DNS)
    "http://[::1", "http://[::1]x/", "http://h:99999/a.jpg", "http://h:port/", "http://127.0.0.1:/", "http://[v1.x",
    "http://a b/c", "http://%31%32%37.0.0.1/", "http://\x00/", "ftp://127.0.0.1/", "file:///etc/passwd", "mailto:x@y",
    "not a url", "http://", "http:///path", "//127.0.0.1/", "http://@/", "http://2130706433/", "http://0x7f.1/",
    "http://[::127.0.0.1]/", "http://[::1%25lo]/", "http://\u0661\u0662\u0667.\u0660.\u0660.\u0661%/",
    f"http://{fullwidth('127.0.0.2')}/a.jpg", f"http://{bold('127.0.0.1')}:1/a.jpg",
]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_list_of_known_garbage_ends_normally(web, pool, tmp_path):
    listeners = [f"http://[{h}]:{p}/a.jpg" if ":" in h else f"http://{fullwidth(h)}:{p}/a.jpg"
                 for h, p in web.forbidden.items()]
    again = web.images[0].replace("127.0.0.1", fullwidth("127.0.0.1")) + "?again"  # the same bytes
    listed = [*NASTY, *listeners, *web.images, again]
    result, kept = explore_fetch(web, listed, tmp_path, pool)
    assert_one_outcome_per_url(result, kept, tmp_path)
    assert len(kept) == len(listed)
    outcomes = MetaDB(tmp_path / "cache" / "explore.db")
    try:
        got = {r.url: r.outcome for r in outcomes.attempts_for_urls(kept)}
    finally:
        outcomes.close()
    assert all(got[u] == "forbidden_address" for u in listeners), got
    # the two spellings fetch the same image: whichever finishes first stores it (process mode: either)
    assert sorted([got[web.images[0]], got[again]]) == ["duplicate", "ok"]
    assert sum(web.stats()["forbidden_hits"].values()) == 0
