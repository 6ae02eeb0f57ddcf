"""URL lists in img2dataset's formats (explorer/crawl/url_lists.py): each read back row for
row, columns named or missing, hostile rows skipped and counted, the file read a chunk at a
time, and `explore fetch` on a parquet list against a loopback image server.

(tests/test_url_lists.py throws garbage at the plain list through `explore fetch`.)
"""
import csv
import gc
import json
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cache.db import MetaDB
from cli import app
from explorer.crawl import url_lists
from explorer.crawl.url_lists import (MAX_CAPTION_CHARS, MAX_LINE_BYTES, MAX_URL_CHARS, UrlListError, open_url_list,
                                      read_url_list)
from tests.crawl_fixtures import image_app, jpeg_bytes, serve

runner = CliRunner()
WIDE = {"COLUMNS": "400"}   # one error line stays one line

ROWS = [  # (url, caption): unicode, quotes and commas a CSV must quote, an empty caption
    ("http://example.test/a.jpg", "a red rose"),
    ("https://example.test/b%20c.png?x=1&y=2", 'caption, with "quotes"'),
    ("http://example.test/\u00e9t\u00e9.jpg", "\u00e9t\u00e9 \u2014 \u65e5\u672c"),
    ("http://example.test/d.jpg", ""),
]


def write_list(path: Path, rows, url_col: str = "url", caption_col: str = "caption") -> Path:
    """`rows` [(url, caption)] as the format `path`'s suffix names, with one more column that
    the reader must ignore."""
    fmt = path.suffix.lstrip(".")
    extra = [str(i) for i in range(len(rows))]
    if fmt == "parquet":
        pq.write_table(pa.table({"key": extra, url_col: [u for u, _ in rows], caption_col: [c for _, c in rows]}),
                       path, row_group_size=max(1, len(rows) // 3 + 1))
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["key", url_col, caption_col])
            writer.writerows([k, u, c] for k, (u, c) in zip(extra, rows))
    elif fmt == "tsv":                                   # no quoting: a field holds no tab
        records = [("key", url_col, caption_col), *((k, u, c) for k, (u, c) in zip(extra, rows))]
        path.write_text("".join("\t".join(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"key": k, url_col: u, caption_col: c}) + "\n"
                                for k, (u, c) in zip(extra, rows)), encoding="utf-8")
    else:
        path.write_text("".join(f"{u}\t{c}\n" for u, c in rows), encoding="utf-8")
    return path


FORMATS = ["parquet", "csv", "tsv", "jsonl", "txt"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_row_for_row(tmp_path, fmt):
    path = write_list(tmp_path / f"urls.{fmt}", ROWS)
    items = read_url_list(path)
    assert [(it.url, it.caption) for it in items] == ROWS
    assert open_url_list(path).format == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_taken_from_the_option_whatever_the_suffix(tmp_path, fmt):
    written = write_list(tmp_path / f"urls.{fmt}", ROWS)
    path = written.rename(tmp_path / "urls.list")
    assert open_url_list(path).format == "txt"                # auto: the suffix says nothing
    assert [(it.url, it.caption) for it in read_url_list(path, list_format=fmt)] == ROWS


def test_unknown_and_compressed_formats_are_one_clear_error(tmp_path):
    path = write_list(tmp_path / "urls.csv", ROWS)
    with pytest.raises(UrlListError, match="unknown URL list format 'xml'"):
        open_url_list(path, "xml")
    gz = tmp_path / "urls.csv.gz"
    gz.write_bytes(b"\x1f\x8b")
    with pytest.raises(UrlListError, match="compressed"):
        open_url_list(gz)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_columns_are_found_by_the_names_given(tmp_path, fmt):
    path = write_list(tmp_path / f"urls.{fmt}", ROWS, url_col="link", caption_col="alt text")
    items = read_url_list(path, url_col="link", caption_col="alt text")
    assert [(it.url, it.caption) for it in items] == ROWS


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_a_missing_column_names_the_columns_the_file_has(tmp_path, fmt):
    path = write_list(tmp_path / f"urls.{fmt}", ROWS, url_col="link", caption_col="alt")
    with pytest.raises(UrlListError) as e:
        open_url_list(path)                                     # no `url` column
    assert str(e.value) == f"{path} has no URL column 'url' (--url-col); its columns: 'key', 'link', 'alt'"
    with pytest.raises(UrlListError) as e:
        open_url_list(path, url_col="link", caption_col="caption")   # a caption column named, absent
    assert "no caption column 'caption'" in str(e.value) and "'key', 'link', 'alt'" in str(e.value)
    # not named: a file without a `caption` column is a list without captions
    assert [(it.url, it.caption) for it in read_url_list(path, url_col="link")] == [(u, "") for u, _ in ROWS]


def test_a_file_that_is_not_the_format_asked_is_one_clear_error(tmp_path):
    path = write_list(tmp_path / "urls.csv", ROWS)
    with pytest.raises(UrlListError, match="cannot read .* as parquet"):
        open_url_list(path, "parquet")
    with pytest.raises(UrlListError, match="cannot read the URL list .*absent.csv: no such file"):
        open_url_list(tmp_path / "absent.csv")
    with pytest.raises(UrlListError, match="a folder"):
        open_url_list(tmp_path)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_one_column_may_serve_as_url_and_caption(tmp_path, fmt):
    path = write_list(tmp_path / f"urls.{fmt}", ROWS)
    assert [(it.url, it.caption) for it in read_url_list(path, caption_col="url")] == [(u, u) for u, _ in ROWS]


def test_bad_parquet_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "urls.parquet"
    urls = ["http://a.test/1.jpg", None, "", "   ", "x" * (MAX_URL_CHARS + 1), "  http://a.test/2.jpg\n"]
    captions = ["one", "two", None, "four", "five", None]
    pq.write_table(pa.table({"url": urls, "caption": captions}), path)
    url_list = open_url_list(path)
    items = [it for chunk in url_list.chunks() for it in chunk]
    assert [(it.url, it.caption) for it in items] == [("http://a.test/1.jpg", "one"), ("http://a.test/2.jpg", "")]
    assert url_list.skipped == {"no URL": 3, f"URL over {MAX_URL_CHARS} characters": 1}
    assert url_list.skipped_rows == 4


def test_a_column_of_numbers_has_no_urls_and_its_captions_are_empty(tmp_path):
    path = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": [1, 2], "caption": [3.0, 4.0]}), path)
    url_list = open_url_list(path)
    assert list(url_list.chunks()) == [] and url_list.skipped == {"no URL": 2}
    pq.write_table(pa.table({"url": ["http://a.test/1.jpg"], "caption": [[1, 2]]}), path)
    assert [(it.url, it.caption) for it in read_url_list(path)] == [("http://a.test/1.jpg", "")]


def test_parquet_strings_that_are_not_utf8_are_replaced_not_fatal(tmp_path):
    """A parquet writer need not check its strings: the bytes are read as bytes."""
    path = tmp_path / "urls.parquet"
    raw = pa.array([b"http://a.test/\xff.jpg", b"http://a.test/2.jpg"], pa.binary())
    pq.write_table(pa.table({"url": raw.view(pa.string()), "caption": raw.view(pa.string())}), path)
    assert [it.url for it in read_url_list(path)] == ["http://a.test/\ufffd.jpg", "http://a.test/2.jpg"]


def test_bad_csv_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "urls.csv"
    path.write_bytes(
        b"\xef\xbb\xbfurl,caption\n"                    # a BOM before the header
        b"http://a.test/1.jpg,\"two\nlines\"\n"         # a quoted caption across lines
        b"http://a.test/\xff.jpg,not utf-8 \xfe\n"      # bytes that are not UTF-8
        b",no url\n"
        b"\n"                                           # blank: not a row
        b"http://a.test/3.jpg\n"                        # no caption field
        b"http://a.test/4.jpg,x,extra,fields\n"
        b"http://a.test/5.jpg,bad\rbreak\n"             # a bare CR in an unquoted field
        + b"http://a.test/6.jpg,\"" + b"y" * 200_000 + b"\"\n"   # a field over the csv module's limit
        + b"http://a.test/7.jpg," + b"z" * (MAX_LINE_BYTES + 10) + b"\n"  # a line over the limit
        + b"http://a.test/8.jpg,last")                  # no final newline
    url_list = open_url_list(path)
    items = [it for chunk in url_list.chunks() for it in chunk]
    assert [(it.url, it.caption) for it in items] == [
        ("http://a.test/1.jpg", "two lines"), ("http://a.test/\ufffd.jpg", "not utf-8 \ufffd"),
        ("http://a.test/3.jpg", ""), ("http://a.test/4.jpg", "x"), ("http://a.test/8.jpg", "last")]
    assert url_list.skipped == {"no URL": 1, "bad CSV line": 2, f"line over {MAX_LINE_BYTES} bytes": 1}


def test_bad_jsonl_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "urls.jsonl"
    lines = [
        json.dumps({"url": "http://a.test/1.jpg", "caption": "one"}),
        "{not json",
        "[1, 2]",
        "[" * 100_000,                                    # nesting past the parser's recursion
        json.dumps({"caption": "no url"}),
        json.dumps({"url": 5, "caption": "a number"}),
        json.dumps({"url": None}),
        "",
        '{"url": "http://a.test/\\ud800.jpg", "caption": {"nested": 1}}',   # a lone surrogate
        json.dumps({"url": "http://a.test/3.jpg", "caption": "\ud83c\udf39 rose"}),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    url_list = open_url_list(path)
    items = [it for chunk in url_list.chunks() for it in chunk]
    assert [(it.url, it.caption) for it in items] == [
        ("http://a.test/1.jpg", "one"), ("http://a.test/\ufffd.jpg", ""), ("http://a.test/3.jpg", "\U0001f339 rose")]
    assert url_list.skipped == {"bad JSON line": 2, "JSON line not an object": 1, "no URL": 3}
    for item in items:
        item.url.encode("utf-8")                          # storable in SQLite


def test_plain_lists_keep_their_rules_and_count_rows_without_a_url(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(b"\xef\xbb\xbfhttp://a.test/1.jpg\tone\n# a comment\n\n   \n\tcaption only\n"
                     b"  http://a.test/2.jpg  \r\nhttp://a.test/3.jpg\x0bhttp://a.test/4.jpg\t\tx\n")
    url_list = open_url_list(path)
    items = [it for chunk in url_list.chunks() for it in chunk]
    assert [(it.url, it.caption) for it in items] == [
        ("http://a.test/1.jpg", "one"), ("http://a.test/2.jpg", ""), ("http://a.test/3.jpg", ""),
        ("http://a.test/4.jpg", "x")]
    assert url_list.skipped == {"no URL": 1}


def test_captions_become_one_line_of_bounded_length(tmp_path):
    long = "word " * MAX_CAPTION_CHARS
    rows = [("http://a.test/1.jpg", "line\nbreaks\tand\u2028separators  \r\n here"),
            ("http://a.test/2.jpg", long), ("http://a.test/3.jpg", "keep \x1b[31m escapes for the terminal")]
    for fmt in ("parquet", "jsonl"):
        items = read_url_list(write_list(tmp_path / f"urls.{fmt}", rows))
        assert items[0].caption == "line breaks and separators here"
        assert len(items[1].caption) == MAX_CAPTION_CHARS and items[1].caption == long[:MAX_CAPTION_CHARS]
        assert items[2].caption == rows[2][1]             # shown through terminal.visible, stored as read


# -- read a chunk at a time -----------------------------------------------------------------------
BIG = 200_000
CHUNK = 1000


def big_rows(n: int):
    return [(f"http://img{i % 97}.example.test/{i}.jpg", f"caption {i}") for i in range(n)]


@pytest.fixture
def source_rows(monkeypatch):
    """Counts what the reader has pulled from the file so far: lines of text files, rows of
    parquet batches."""
    pulled = {"n": 0}
    lines, batches = url_lists.bounded_lines, url_lists.parquet_batches

    def counted_lines(*args, **kwargs):
        for line in lines(*args, **kwargs):
            pulled["n"] += 1
            yield line

    def counted_batches(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            pulled["n"] += batch.num_rows
            yield batch

    monkeypatch.setattr(url_lists, "bounded_lines", counted_lines)
    monkeypatch.setattr(url_lists, "parquet_batches", counted_batches)
    return pulled


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_long_list_is_read_one_chunk_at_a_time(tmp_path, fmt, source_rows):
    """Each chunk arrives with the file read at most one chunk (and a header) past it, and the
    reader keeps no earlier chunk alive: the whole file is never held."""
    path = write_list(tmp_path / f"urls.{fmt}", big_rows(BIG))
    chunks = open_url_list(path, chunk_rows=CHUNK).chunks()
    seen, first_item = 0, None
    for k, chunk in enumerate(chunks, start=1):
        assert 0 < len(chunk) <= CHUNK
        seen += len(chunk)
        assert source_rows["n"] <= (k + 1) * CHUNK + 1, (k, source_rows["n"])   # (+1: a header)
        if k == 1:
            first_item = weakref.ref(chunk[0])
            assert chunk[0].url == "http://img0.example.test/0.jpg"
        if k == 3:
            gc.collect()
            assert first_item() is None, "the reader still holds the first chunk"
        del chunk
    assert seen == BIG and k == BIG // CHUNK


def test_a_chunk_reader_left_early_has_read_one_chunk(tmp_path, source_rows):
    path = write_list(tmp_path / "urls.parquet", big_rows(BIG))
    chunks = open_url_list(path, chunk_rows=CHUNK).chunks()
    assert len(next(chunks)) == CHUNK
    chunks.close()
    assert source_rows["n"] <= CHUNK


def test_chunk_rows_must_be_positive(tmp_path):
    with pytest.raises(UrlListError, match="at least 1"):
        open_url_list(write_list(tmp_path / "urls.txt", ROWS), chunk_rows=0)


# -- explore fetch ----------------------------------------------------------------------------------
def test_fetch_reads_a_parquet_list_in_chunks_and_a_rerun_fetches_nothing(tmp_path):
    files = {f"/{i}.jpg": (jpeg_bytes(320, 240, seed=200 + i), {}) for i in range(6)}
    files["/broken.jpg"] = (jpeg_bytes(320, 240, seed=199)[:500], {})
    app_, hits = image_app(files)
    with serve(app_) as port:
        base = f"http://127.0.0.1:{port}"
        links = [f"{base}/{i}.jpg" for i in range(6)] + [None, f"{base}/broken.jpg", "", f"{base}/404.jpg",
                                                         f"{base}/0.jpg"]     # a repeat, in a later chunk
        alts = [f"alt {i}" for i in range(6)] + ["x", "broken", "y", None, "again"]
        path = tmp_path / "list.parquet"
        pq.write_table(pa.table({"link": links, "alt": alts}), path)
        args = ["fetch", str(path), "--cache-dir", str(tmp_path / "cache"), "--allow", f"127.0.0.1:{port}",
                "--url-col", "link", "--caption-col", "alt", "--chunk-rows", "3", "--json",
                "--set", "crawl.image_size=64", "--set", "crawl.workers=1", "--set", "crawl.pool=thread"]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        summary = json.loads(first.stdout)
        # 9 rows with a URL, in chunks of 3: the repeat of /0.jpg is answered by its recorded attempt
        assert summary["attempted"] == 9 and summary["already_done"] == 1
        assert summary["outcomes"] == {"ok": 6, "corrupt": 1, "http_error": 1}
        assert summary["skipped_rows"] == 2 and summary["skipped"] == {"no URL": 2}
        assert hits == {**{f"/{i}.jpg": 1 for i in range(6)}, "/broken.jpg": 1, "/404.jpg": 1}

        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        second = json.loads(again.stdout)
        assert second["attempted"] == 9 and second["already_done"] == 9 and second["outcomes"] == {}
        assert hits == {**{f"/{i}.jpg": 1 for i in range(6)}, "/broken.jpg": 1, "/404.jpg": 1}

    db = MetaDB(tmp_path / "cache" / "explore.db")
    try:
        rows = db.attempts_for_urls([f"{base}/{i}.jpg" for i in range(6)])
    finally:
        db.close()
    assert {(r.url, r.caption, r.outcome) for r in rows} == {(f"{base}/{i}.jpg", f"alt {i}", "ok") for i in range(6)}


def test_fetch_with_a_missing_column_is_one_line_and_writes_nothing(tmp_path):
    path = write_list(tmp_path / "urls.csv", ROWS, url_col="link")
    result = runner.invoke(app, ["fetch", str(path), "--cache-dir", str(tmp_path / "cache")], env=WIDE)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no URL column 'url'" in lines[0] and "'key', 'link', 'caption'" in lines[0]
    assert not (tmp_path / "cache").exists()


def test_fetch_table_output_reports_skipped_rows(tmp_path):
    """The table (not --json) says how many rows were skipped and why; nothing here is fetched
    (the only URL is refused by the address guard before any connection)."""
    path = tmp_path / "urls.jsonl"
    path.write_text('{"url": "http://127.0.0.1:9/x.jpg"}\nnot json\n{"caption": "no url"}\n', encoding="utf-8")
    result = runner.invoke(app, ["fetch", str(path), "--cache-dir", str(tmp_path / "cache"),
                                 "--set", "crawl.pool=thread"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "2 rows skipped (bad JSON line: 1, no URL: 1)" in result.output
    assert "forbidden_address" in result.output
