"""Memory of reading a long URL list: `explore fetch`'s chunked reader against the whole file.

Writes a URL list of --rows rows (url, caption and a third column, img2dataset's shape) as
parquet (pyarrow's default row groups) and as CSV to a temporary folder, then reads each file in
a fresh subprocess three ways and prints each one's peak RSS (VmHWM: see `peak_rss_mib`), its
peak after the imports (the same in every mode: pandas, pyarrow, explorer.crawl.url_lists) and
its seconds:
  chunked  `open_url_list(path).chunks()`, --chunk-rows a chunk, each dropped (what fetch holds)
  whole    `pandas.read_parquet` / `pandas.read_csv` of the file, every column
  items    `read_url_list`: every row as a CrawlItem in one list (what fetch held of a text list
           before it read in chunks)
No network. Last line `peak_rss_mib=<chunked> whole_mib=<whole>`, parquet's.

    .venv/bin/python bench/url_list_memory.py [--rows 1000000] [--chunk-rows 10000]

Measured 2026-12-02 on the 2-core machine (busy with other benchmarks, so the seconds are
loose), `nice -n 19 .venv/bin/python bench/url_list_memory.py` (1M rows: parquet 46 MiB, one row
group; CSV 117 MiB), peak RSS in MiB, what the read added to the imports' 142 in brackets:
  parquet  chunked 181.4 (+39.4) in 5.4 s   whole 402.1 (+259.9) in 1.6 s   items 495.3 (+353.3) in 8.7 s
  csv      chunked 148.4 (+6.4)  in 5.6 s   whole 397.5 (+255.3) in 0.5 s   items 464.0 (+322.0) in 9.0 s
  last line: peak_rss_mib=181.4 whole_mib=402.1
The chunked reader's cost does not grow with the list: with --rows 3000000 (parquet 137 MiB, CSV
352 MiB) it added +39.7 (parquet) and +6.6 (CSV), against whole +646.7 / +750.3 and items
+993.6 / +964.1. Parquet's +39 is mostly pyarrow's (its reader, allocator and kernels); with pyarrow's
defaults (the column chunks of the row group pre-buffered, freed memory kept by mimalloc) the
chunked read of the 1M-row file added +105. The chunked reader turns about 180k rows a second
into CrawlItems here: far beyond what a crawl fetches.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("red rose garden photo of a the dog cat on beach sunset mountain lake old house car "
         "blue sky portrait woman man child street city night light tree flower field with in").split()


def write_lists(folder: Path, rows: int, seed: int = 0) -> dict[str, Path]:
    """The same rows as urls.parquet and urls.csv: {format: path}."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**48, size=rows)
    urls = [f"https://img{i % 997}.example.com/photos/{i:08d}/{h:012x}.jpg" for i, h in enumerate(ids.tolist())]
    lengths = rng.integers(3, 16, size=rows)
    picks = rng.integers(0, len(WORDS), size=int(lengths.sum())).tolist()
    captions, at = [], 0
    for n in lengths.tolist():
        captions.append(" ".join(WORDS[j] for j in picks[at:at + n]))
        at += n
    table = pa.table({"url": urls, "caption": captions, "key": [f"{i:09d}" for i in range(rows)]})
    paths = {"parquet": folder / "urls.parquet", "csv": folder / "urls.csv"}
    pq.write_table(table, paths["parquet"])
    pacsv.write_csv(table, paths["csv"])
    return paths


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's `ru_maxrss` keeps, across exec, the
    high-water mark of the process that forked: a child of this bench would report the bench's
    own 1M generated rows. VmHWM is the current program's alone."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (elsewhere: kilobytes on Linux only)


def measure(mode: str, path: Path, chunk_rows: int) -> dict:
    """In this (fresh) process: read `path` the `mode` way; rows, RSS figures in MiB, seconds."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imported in every mode, so that the baselines agree)

    from explorer.crawl.url_lists import open_url_list, read_url_list

    base = peak_rss_mib()
    start = time.perf_counter()
    if mode == "chunked":
        rows = sum(len(chunk) for chunk in open_url_list(path, chunk_rows=chunk_rows).chunks())
    elif mode == "whole":
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        rows = len(frame)
    elif mode == "items":
        rows = len(read_url_list(path))
    else:
        raise ValueError(mode)
    return {"mode": mode, "rows": rows, "imports_mib": round(base, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
            "seconds": round(time.perf_counter() - start, 2)}


def measured_in_subprocess(mode: str, path: Path, chunk_rows: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", mode, str(path), "--chunk-rows", str(chunk_rows)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"{mode} {path.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.chunk_rows)))
        return

    with tempfile.TemporaryDirectory(prefix="url-lists-") as tmp:
        start = time.perf_counter()
        paths = write_lists(Path(tmp), args.rows)
        sizes = ", ".join(f"{fmt} {p.stat().st_size / 2**20:.0f} MiB" for fmt, p in paths.items())
        print(f"{args.rows:,} rows written in {time.perf_counter() - start:.1f} s ({sizes}); "
              f"chunks of {args.chunk_rows:,} rows")
        peaks: dict[tuple[str, str], float] = {}
        for fmt, path in paths.items():
            for mode in ("chunked", "whole", "items"):
                got = measured_in_subprocess(mode, path, args.chunk_rows)
                if got["rows"] != args.rows:
                    sys.exit(f"{mode} {fmt} read {got['rows']} rows of {args.rows}")
                peaks[fmt, mode] = got["peak_rss_mib"]
                print(f"{fmt:8s} {mode:8s} peak RSS {got['peak_rss_mib']:7.1f} MiB "
                      f"(imports {got['imports_mib']:.1f}, read +{got['peak_rss_mib'] - got['imports_mib']:.1f}) "
                      f"in {got['seconds']:.1f} s")
    print(f"peak_rss_mib={peaks['parquet', 'chunked']} whole_mib={peaks['parquet', 'whole']}")


if __name__ == "__main__":
    main()
