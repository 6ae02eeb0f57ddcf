"""The HTML report of a run (explorer/run/html_report.py) on run directories built by hand: what
the web sent is escaped, nothing is loaded from outside, every section is there, and its size is
bounded however many images the run kept. The browser test is tests/test_report_browser.py."""
import contextlib
import hashlib
import json
import re
import sqlite3
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from cache.paths import image_relpath
from explorer.engines.base import search_key
from explorer.run import html_report
from explorer.session import RunDir
from tests.crawl_fixtures import noisy_jpeg
from tests.run_fixtures import make_run

SECTIONS = ("summary", "curves", "leaderboard", "gallery", "queries", "outcomes", "eval",
            "test-copies", "config")
HOSTILE_CONCEPT = "<script>alert('c')</script>\"q'\x1b[2J\u202e&amp;"
HOSTILE_TITLE = "<img src=x onerror=alert(1)> \"title\" \x00\x07"


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(page)
    return parser.tags




def store(run: RunDir, data: bytes) -> tuple[str, str]:
    """Put an image file into the run's cache as the crawl would; (sha256, relative path)."""
    sha = hashlib.sha256(data).hexdigest()
    rel = image_relpath(sha)
    path = run.root / "cache" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha, rel


def add_concept(con, run_round: int, concept: str, images: list[tuple[str, str, str, str, str]],
                reward: float, page: int = 1) -> None:
    """A scored query of `concept` (its first ask, or a re-ask of results page `page`) that kept
    `images` [(sha256, path, url, title, source page)], with its search results stored as the
    engine's cache holds them."""
    qid = con.execute(
        "INSERT INTO queries(round, concept, text, engine, status, n_results, n_kept, reward, refinement, "
        "page) VALUES (?, ?, ?, 'sandbox', 'done', ?, ?, ?, ?, ?)",
        (run_round, concept, concept, len(images), len(images), reward, f"page:{page}" if page > 1 else "",
         page)).lastrowid
    results = []
    for i, (sha, rel, url, title, source) in enumerate(images):
        con.execute("INSERT INTO attempts(url, query_id, caption, outcome, sha256) VALUES (?, ?, ?, 'ok', ?)",
                    (url, qid, title, sha))
        con.execute("INSERT OR IGNORE INTO images(sha256, path, first_url, caption, query_id, round, reward, "
                    "vec_id) VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(vec_id), -1) + 1 FROM images))",
                    (sha, rel, url, title, qid, run_round, reward - i * 1e-3))
        results.append({"title": title, "image": url, "url": source})
    con.execute("INSERT OR REPLACE INTO search_cache(engine, query, results) VALUES ('sandbox', ?, ?)",
                (search_key(concept, page), json.dumps(results)))


def write_rounds(run: RunDir, n: int, name: str = "tulip") -> None:
    for r in range(n):
        run.append_round({"round": r, "queries": 4, "fetched": 30, "kept": 12, "failed_queries": r % 2,
                          "mean_reward": 0.1 + r / (n + 1), "best": [[name, 0.5]],
                          "train": {"step": 3 * (r + 1), "loss": 2.0 - r / (n + 1), "pixel_loss": 1.5,
                                    "caption_loss": 0.5},
                          "knn_acc": 0.3 + r / (3 * n), "outcomes": {"ok": 12, "duplicate": 3}})


@pytest.fixture
def hostile_run(tmp_path) -> RunDir:
    """A small run whose concepts, titles, URLs, source pages and outcome names are hostile."""
    run = make_run(tmp_path / "run")
    pictures = [store(run, noisy_jpeg(i, 64)) for i in range(4)]
    missing_sha = "ab" * 32
    broken_sha, broken_rel = store(run, b"not a jpeg at all")
    with contextlib.closing(sqlite3.connect(run.db_path)) as con, con:
        add_concept(con, 0, HOSTILE_CONCEPT, [
            (*pictures[0], "javascript:alert(1)//.jpg", HOSTILE_TITLE, "data:text/html,<script>x</script>"),
            (*pictures[1], 'http://example.com/a"onmouseover="alert(1).jpg', "fine title",
             "https://example.com/page?a=1&b=<2>"),
            (missing_sha, image_relpath(missing_sha), "http://example.com/gone.jpg", "gone", ""),
            (broken_sha, broken_rel, "http://example.com/broken.jpg", "broken", ""),
        ], reward=0.9)
        add_concept(con, 1, "tulip", [(*pictures[2], "http://example.com/t.jpg", "a tulip",
                                       "http://example.com/tulips")], reward=0.4)
        add_concept(con, 1, "tulip", [], reward=0.2, page=2)
        con.execute("INSERT INTO attempts(url, query_id, outcome, reason) VALUES "
                    "('http://example.com/leak.jpg', 1, 'test_leak', 'copy'), "
                    "('http://example.com/x', 1, '<b>odd</b>', '')")
    write_rounds(run, 2, name="<script>best()</script>")
    return run


def test_the_web_s_strings_are_escaped_and_only_web_links_are_links(hostile_run):
    page = html_report.html_report(hostile_run)
    tags = parse(page)
    assert not re.search(r"<script", page, re.I)                      # no script of ours or theirs
    assert "&lt;script&gt;alert(&#x27;c&#x27;)&lt;/script&gt;" in page   # the concept, as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page                  # the title, as text
    assert "\x1b" not in page and "\\x1b" in page and "\\u202e" in page and "\x00" not in page
    for tag, attrs in tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)   # no handler slipped in
        if "href" in attrs:
            assert attrs["href"].startswith(("http://", "https://")), attrs
    hrefs = {attrs["href"] for tag, attrs in tags if tag == "a"}
    assert 'http://example.com/a"onmouseover="alert(1).jpg' in hrefs   # quotes stay inside the value
    assert "https://example.com/page?a=1&b=<2>" in hrefs and "http://example.com/tulips" in hrefs
    assert "javascript:alert(1)//.jpg" in page and "data:text/html,&lt;script&gt;" in page  # as text only
    assert "&lt;b&gt;odd&lt;/b&gt;" in page


def test_the_page_loads_nothing_from_outside(hostile_run):
    page = html_report.html_report(hostile_run)
    tags = parse(page)
    assert not any(tag in ("script", "link", "iframe", "object", "embed", "base") for tag, _ in tags)
    srcs = [attrs.get("src", "") for tag, attrs in tags if "src" in attrs]
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(//|file:|ftp:)""", page, re.I)
    assert "url(" not in page                                              # no CSS fetch either
    policy = [a["content"] for t, a in tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert policy == [html_report.POLICY] and "default-src 'none'" in policy[0]


def test_every_section_is_there_with_the_run_s_figures(hostile_run):
    page = html_report.html_report(hostile_run)
    ids = [attrs["id"] for tag, attrs in parse(page) if tag == "section"]
    assert ids == list(SECTIONS)
    assert page.count("<svg") == 5                                  # reward, k-NN, losses, queries, kept
    images = [a for t, a in parse(page) if t == "img"]
    assert len(images) == 3           # 3 readable pictures; the missing and the broken file are left out
    assert "sandbox-flowers" in page and "not evaluated yet" in page
    leaderboard = page[page.index('id="leaderboard"'):page.index('id="gallery"')]
    assert "0.900" in leaderboard and "0.400" in leaderboard        # rewards, best first
    assert leaderboard.index("&lt;script&gt;") < leaderboard.index("tulip")
    assert "0.200" in leaderboard                                   # tulip's re-ask reward
    test_copies = page[page.index('id="test-copies"'):page.index('id="config"')]
    assert "<b>1</b>" in test_copies
    assert "[crawl]" in page and "queries_per_round" in page       # the resolved config


def test_the_eval_table_comes_with_eval_json(hostile_run):
    (hostile_run.root / "eval.json").write_text(json.dumps({
        "target": "sandbox-flowers", "n_train": 80, "n_test": 40, "classes": 4, "k": 20,
        "n_labels": {"1.0": 80, "0.1": 8}, "linear": {"1.0": 0.625, "0.1": 0.4},
        "knn": {"1.0": 0.55, "0.1": 0.35}, "test_copies_removed": 1}))
    page = html_report.html_report(hostile_run)
    ev = page[page.index('id="eval"'):page.index('id="test-copies"')]
    assert "100% labels (80)" in ev and "10% labels (8)" in ev
    assert re.search(r"linear probe</td><td class=num>62\.5</td><td class=num>40\.0", ev)
    assert re.search(r"k-NN \(k=20\)</td><td class=num>55\.0</td><td class=num>35\.0", ev)
    assert "finished" in page[:page.index('id="summary"')]        # evaluated: the run ended

    (hostile_run.root / "eval.json").write_text("{not json")
    page = html_report.html_report(hostile_run)
    assert "could not be read" in page[page.index('id="eval"'):]   # said, and the rest still written


def test_a_running_run_says_so(hostile_run):
    with hostile_run.lock():
        assert html_report.html_report(hostile_run).count("(running)") == 1
    assert "stopped" in html_report.html_report(hostile_run)


def test_the_report_of_a_large_run_stays_small(tmp_path):
    """Many concepts, images and rounds: the page shows a bounded sample of them."""
    run = make_run(tmp_path / "run")
    files = [store(run, noisy_jpeg(i)) for i in range(40)]
    n_concepts, per_query = 400, 50
    with contextlib.closing(sqlite3.connect(run.db_path)) as con, con:
        for c in range(n_concepts):
            images = [(hashlib.sha256(f"{c}/{i}".encode()).hexdigest(), files[(c + i) % len(files)][1],
                       f"http://example.com/{c}/{i}.jpg", f"picture {i} of concept {c} " + "words " * 40,
                       f"http://example.com/{c}/page{i}") for i in range(per_query)]
            add_concept(con, c % 1000, f"concept {c}", images, reward=c / n_concepts)
    write_rounds(run, 3000)
    path = html_report.write_report(run)
    page = path.read_text()
    size = path.stat().st_size
    shown = html_report.GALLERY_CONCEPTS * html_report.IMAGES_PER_CONCEPT
    assert len([a for t, a in parse(page) if t == "img"]) == shown
    assert size < 2_000_000, size
    for points in re.findall(r'<polyline points="([^"]*)"', page):
        assert len(points.split()) <= html_report.CURVE_POINTS
    rows = page[page.index('id="queries"'):page.index('id="outcomes"')].count("<tr>")
    assert rows == html_report.ROUNDS_IN_TABLE + 1                  # and the header
    assert "concept 399" in page and "concept 0<" in page            # the best and the worst end


def test_the_report_is_replaced_whole(hostile_run, monkeypatch):
    """A page that fails to render leaves the last one as it was (a browser never sees half)."""
    path = html_report.write_report(hostile_run)
    before = path.read_bytes()

    def broken(d):
        raise OSError("disk full")
    monkeypatch.setattr(html_report, "render", broken)
    with pytest.raises(OSError):
        html_report.write_report(hostile_run)
    assert path.read_bytes() == before
    assert [p.name for p in hostile_run.root.iterdir() if p.name.startswith(".report")] == []


def test_the_round_observer_rewrites_the_report(hostile_run):
    observer = html_report.round_writer(hostile_run)
    observer({"round": 1})
    page = (hostile_run.root / "report.html").read_text()
    assert "running (round 1 done)" in page


def test_explore_report_writes_and_opens_it(hostile_run, tmp_path, monkeypatch):
    from cli import app

    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    cli = CliRunner()
    out = tmp_path / "elsewhere" / "r.html"
    result = cli.invoke(app, ["report", str(hostile_run.root), "--out", str(out), "--open"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and out.read_text().startswith("<!DOCTYPE html>")
    assert opened == [out.resolve().as_uri()]

    result = cli.invoke(app, ["report", str(hostile_run.root)])
    assert result.exit_code == 0 and (hostile_run.root / "report.html").exists()

    result = cli.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "is not a run directory" in result.output
    assert len(result.output.strip().splitlines()) == 1
