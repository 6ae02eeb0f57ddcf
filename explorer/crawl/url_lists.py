"""URL lists for `explore fetch`: a file of image URLs (and captions) -> chunks of CrawlItems.

The formats are img2dataset's tables (parquet, CSV, TSV, JSONL: a URL column and a caption
column, `url` and `caption` unless named otherwise) and this project's plain list (`url` or
`url<TAB>caption` a line, `#` comments). A list may hold millions of rows, so it is read a chunk
at a time (`UrlList.chunks`), never whole: memory follows the chunk, not the file. Parquet is
read a batch at a time too, only its two columns, their pages streamed (`parquet_batches`).

Everything in the file is untrusted. A row whose URL is missing, empty, not text or longer than
MAX_URL_CHARS, a line longer than MAX_LINE_BYTES, a CSV line or JSON line that does not parse:
each is skipped and counted by reason (`UrlList.skipped`), never fetched, never fatal. Bytes that
are not UTF-8 are replaced. A caption becomes one line of at most MAX_CAPTION_CHARS (as the
corpus engine's captions do); one that is not text is empty. Other characters are kept: a URL's
are judged by the crawler's guard like any URL, and what reaches a terminal is escaped there
(`explorer.terminal.visible`). The user's own mistakes (no such column, an unreadable file)
raise `UrlListError`: one line naming the file and what it holds.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from explorer.crawl.crawler import CrawlItem
from explorer.errors import UserError, first_line

FORMATS = ("auto", "txt", "csv", "tsv", "jsonl", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".zip"}
DEFAULT_URL_COL = "url"
DEFAULT_CAPTION_COL = "caption"      # used when the file has it, unless another is named
CHUNK_ROWS = 10_000
MAX_URL_CHARS = 8192                 # a longer request line is refused by common servers anyway
MAX_CAPTION_CHARS = 1000             # as corpus captions
MAX_LINE_BYTES = 1 << 20             # a longer line is skipped, read past without being held
SHOWN_COLUMNS = 20                   # an error names at most this many of the file's columns

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # paired ones are joined by the JSON decoder
Row = tuple[object, object]          # (url value, caption value) as the file holds them


class UrlListError(UserError):
    """A URL list that cannot be read as asked: unknown format, no such column, unreadable."""


@dataclass
class UrlList:
    """An opened URL list: its format and columns checked, its rows not read yet."""

    path: Path
    format: str
    url_col: str = DEFAULT_URL_COL
    caption_col: str | None = None   # None: no captions (the file has no such column)
    chunk_rows: int = CHUNK_ROWS
    skipped: Counter = field(default_factory=Counter)  # reason -> rows skipped so far

    def chunks(self) -> Iterator[list[CrawlItem]]:
        """The list's items, at most `chunk_rows` a chunk, read as they are asked for."""
        chunk: list[CrawlItem] = []
        try:
            for url, caption in ROW_READERS[self.format](self):
                item = self.item(url, caption)
                if item is None:
                    continue
                chunk.append(item)
                if len(chunk) >= self.chunk_rows:
                    yield chunk
                    chunk = []
        except OSError as e:
            raise UrlListError(f"cannot read the URL list {self.path}: {e.strerror or e}") from None
        if chunk:
            yield chunk

    def item(self, url: object, caption: object) -> CrawlItem | None:
        """The row as a CrawlItem, or None (counted in `skipped`) when its URL cannot be one."""
        if not isinstance(url, str) or not url.strip():
            self.skipped["no URL"] += 1
            return None
        url = valid_text(url.strip())
        if len(url) > MAX_URL_CHARS:
            self.skipped[f"URL over {MAX_URL_CHARS} characters"] += 1
            return None
        return CrawlItem(url=url, caption=clean_caption(caption))

    @property
    def skipped_rows(self) -> int:
        return sum(self.skipped.values())


def open_url_list(path: str | Path, list_format: str = "auto", url_col: str = DEFAULT_URL_COL,
                  caption_col: str | None = None, chunk_rows: int = CHUNK_ROWS) -> UrlList:
    """Check the file's format and columns now, so that a mistake ends the command before it
    has fetched anything. `caption_col` None: `caption` if the file has it, else no captions;
    a column named here must exist."""
    path = Path(path)
    if chunk_rows < 1:
        raise UrlListError(f"chunk rows must be at least 1 (got {chunk_rows})")
    if not path.exists() or path.is_dir():
        raise UrlListError(f"cannot read the URL list {path}: {'a folder' if path.is_dir() else 'no such file'}")
    fmt = list_format_of(path, list_format)
    if fmt == "txt":                          # no columns: read once, so a pipe serves too
        return UrlList(path, fmt, chunk_rows=chunk_rows)
    try:
        have = COLUMN_READERS[fmt](path)
    except OSError as e:
        raise UrlListError(f"cannot read the URL list {path}: {e.strerror or e}") from None
    url_col, caption_col = pick_columns(path, have, url_col, caption_col)
    return UrlList(path, fmt, url_col, caption_col, chunk_rows)


def read_url_list(path: str | Path, **options) -> list[CrawlItem]:
    """The whole list at once: for lists known to be small (tests, a handful of URLs)."""
    return [item for chunk in open_url_list(path, **options).chunks() for item in chunk]


def list_format_of(path: Path, list_format: str) -> str:
    """The format asked for, or (auto) the one the suffix names; the plain list otherwise."""
    if list_format not in FORMATS:
        raise UrlListError(f"unknown URL list format {list_format!r} (one of {', '.join(FORMATS)})")
    if list_format != "auto":
        return list_format
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise UrlListError(f"{path} is compressed: decompress it first (URL lists are read as they are)")
    return SUFFIX_FORMATS.get(suffix, "txt")


def pick_columns(path: Path, have: list[str], url_col: str, caption_col: str | None) -> tuple[str, str | None]:
    """(URL column, caption column or None), or UrlListError naming the columns the file has."""
    if url_col not in have:
        raise UrlListError(f"{path} has no URL column {url_col!r} (--url-col); its columns: {shown_columns(have)}")
    if caption_col is None:
        return url_col, DEFAULT_CAPTION_COL if DEFAULT_CAPTION_COL in have else None
    if caption_col not in have:
        raise UrlListError(f"{path} has no caption column {caption_col!r} (--caption-col); "
                           f"its columns: {shown_columns(have)}")
    return url_col, caption_col


def shown_columns(have: list[str]) -> str:
    """The file's column names for an error line: a bounded number, each cut short."""
    if not have:
        return "none"
    names = [repr(valid_text(str(name))[:60]) for name in have[:SHOWN_COLUMNS]]
    more = f" and {len(have) - SHOWN_COLUMNS} more" if len(have) > SHOWN_COLUMNS else ""
    return ", ".join(names) + more


# -- cleaning one row --------------------------------------------------------------------------
def valid_text(text: str) -> str:
    """`text` with lone surrogates (a JSON "\\ud800") replaced: SQLite cannot store them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return LONE_SURROGATE.sub("\ufffd", text)


def clean_caption(caption: object) -> str:
    """One line (runs of whitespace, line breaks included, as one space), at most
    MAX_CAPTION_CHARS; "" for a value that is not text."""
    if not isinstance(caption, str):
        return ""
    return " ".join(valid_text(caption[:4 * MAX_CAPTION_CHARS]).split())[:MAX_CAPTION_CHARS]


# -- lines of text files -----------------------------------------------------------------------
def open_binary(path: Path) -> IO[bytes]:
    return open(path, "rb")


def bounded_lines(path: Path, skipped: Counter) -> Iterator[str]:
    """The file's lines (`\\n` kept), decoded with bad bytes replaced and a leading BOM dropped.
    A line over MAX_LINE_BYTES is read past in pieces, never held whole, and counted."""
    with open_binary(path) as f:
        first = True
        while line := f.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                skipped[f"line over {MAX_LINE_BYTES} bytes"] += 1
                first = False
                continue
            text = line.decode("utf-8", "replace")
            if first:
                text, first = text.removeprefix("\ufeff"), False
            yield text


# -- each format: its column names, and its rows -----------------------------------------------
def txt_rows(url_list: UrlList) -> Iterator[Row]:
    """Lines `url` or `url<TAB>caption`; blank lines and `#` comments are not rows. Any line
    break Python knows (\\r, \\x0b, \\u2028...) ends a line, as `str.splitlines` says."""
    for line in bounded_lines(url_list.path, url_list.skipped):
        for part in line.splitlines():
            url, _, caption = part.partition("\t")
            if url.strip().startswith("#") or not (url.strip() or caption.strip()):
                continue
            yield url, caption


def csv_dialect(fmt: str) -> dict:
    """CSV quotes fields; TSV does not (a caption starting with `"` would swallow lines)."""
    return {"delimiter": ","} if fmt == "csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}


def csv_records(path: Path, fmt: str, skipped: Counter) -> Iterator[list[str]]:
    """The file's records (the header first); one that does not parse (a field over the csv
    module's limit, a stray line break) is counted and passed over."""
    records = csv.reader(bounded_lines(path, skipped), **csv_dialect(fmt))
    while True:
        try:
            yield next(records)
        except StopIteration:
            return
        except csv.Error:
            skipped["bad CSV line"] += 1


def csv_columns(path: Path, fmt: str) -> list[str]:
    """The header record's names."""
    return next(csv_records(path, fmt, Counter()), [])


def csv_rows(url_list: UrlList) -> Iterator[Row]:
    """Each record after the header; a record too short for the URL column has no URL."""
    records = csv_records(url_list.path, url_list.format, url_list.skipped)
    header = next(records, [])
    at_url = header.index(url_list.url_col)
    at_caption = header.index(url_list.caption_col) if url_list.caption_col is not None else None
    for record in records:
        if not record:                        # a blank line
            continue
        url = record[at_url] if at_url < len(record) else None
        caption = record[at_caption] if at_caption is not None and at_caption < len(record) else None
        yield url, caption


def json_objects(path: Path, skipped: Counter) -> Iterator[dict]:
    """Each line's JSON object; a line that is not one is counted (blank lines are not lines)."""
    for line in bounded_lines(path, skipped):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            skipped["bad JSON line"] += 1
            continue
        if not isinstance(value, dict):
            skipped["JSON line not an object"] += 1
            continue
        yield value


def jsonl_columns(path: Path) -> list[str]:
    """The first object's keys: a JSONL file names its columns on every line."""
    first = next(json_objects(path, Counter()), None)
    return list(first) if first is not None else []


def jsonl_rows(url_list: UrlList) -> Iterator[Row]:
    for obj in json_objects(url_list.path, url_list.skipped):
        yield obj.get(url_list.url_col), obj.get(url_list.caption_col) if url_list.caption_col else None


def parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            return list(pf.schema_arrow.names)
    except pa.ArrowException as e:  # not parquet, a broken footer
        raise UrlListError(f"cannot read {path} as parquet: {first_line(e)}") from None


def parquet_batches(path: Path, columns: list[str], batch_rows: int):
    """The file's record batches of `columns` only, read one at a time. By default pyarrow
    reads a row group's column chunks whole (a 1M-row list is often one row group) and its
    allocator keeps what it freed: here pages are streamed through a small buffer, and freed
    memory goes back after each batch (bench/url_list_memory.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                yield batch
                pa.default_memory_pool().release_unused()
    except pa.ArrowException as e:  # a broken page or row group, met part way
        raise UrlListError(f"cannot read {path} as parquet: {first_line(e)}") from None


def parquet_rows(url_list: UrlList) -> Iterator[Row]:
    url_col, caption_col = url_list.url_col, url_list.caption_col
    columns = list(dict.fromkeys([url_col] + ([caption_col] if caption_col else [])))
    for batch in parquet_batches(url_list.path, columns, url_list.chunk_rows):
        urls = column_texts(batch.column(url_col))
        captions = column_texts(batch.column(caption_col)) if caption_col else [None] * len(urls)
        yield from zip(urls, captions)


def column_texts(column) -> list[str | None]:
    """Each value of an Arrow column as text (bytes that are not UTF-8 replaced: a parquet
    writer need not check them); None for a null, and for every value of a column that holds
    no text (numbers, lists)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    try:
        raw = column.cast(pa.large_binary())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return [None] * len(column)
    return [None if b is None else b.decode("utf-8", "replace") for b in raw.to_pylist()]


ROW_READERS = {"txt": txt_rows, "csv": csv_rows, "tsv": csv_rows, "jsonl": jsonl_rows, "parquet": parquet_rows}
COLUMN_READERS = {"csv": lambda path: csv_columns(path, "csv"), "tsv": lambda path: csv_columns(path, "tsv"),
                  "jsonl": jsonl_columns, "parquet": parquet_columns}
