"""A run's kept images -> shards to train on elsewhere (`explore export`).

Each image the run kept (an `images` row of its database) becomes one sample: the JPEG as the
cache stores it, its caption (the title it came with), the concept and query text that found
it, its reward (the freshest: re-scored by a later encoder where the run refreshed it, as the
replay and `explore rewards` use it), its source URL and its sha256.

    OUT/shard-000000.tar ...      webdataset: <sha256>.jpg, <sha256>.txt (caption), <sha256>.json
    OUT/shard-000000.parquet ...  parquet: one row per sample, the JPEG a binary column
    OUT/_manifest.json            written last: an export is whole when it is there

The database is read a page at a time and each sample is written as it is read, so a run of
any size exports in flat memory. Each shard is written as .NAME.tmp and renamed when complete:
an interrupted export leaves whole shards, perhaps a .tmp, and no manifest. The manifest's `_`
and the temp files' `.` are the prefixes parquet readers skip (`pd.read_parquet(OUT)` reads the
shards only), as a `shard-*.tar` glob does for webdataset. A file that is missing,
unreadable or not the bytes its sha256 names is skipped and counted, never fatal.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from cache.atomic import write_atomic
from cache.db import ExportedImage, MetaDB
from explorer.errors import UserError
from explorer.session import RunDir

FORMATS = ("webdataset", "parquet")
SHARD_SIZE = 10_000
MANIFEST = "_manifest.json"
SHARD_PREFIX = "shard-"
EXPORT_FILE = re.compile(rf"\.?{SHARD_PREFIX}\d{{6,}}\.(tar|parquet)(\.tmp)?")
ROW_GROUP_BYTES = 64 << 20   # a parquet row group is held in memory until written: keep it small
ROW_GROUP_ROWS = 1000
INSTALL_WEBDATASET = "pip install -e '.[export]'"


class ExportError(UserError):
    """An export that cannot start: a bad option, an output folder that holds one already, a
    missing package."""


@dataclass
class ExportSummary:
    """What an export wrote: `skipped` counts images left out by why (missing, unreadable,
    damaged); `filtered` the images below --min-reward or never scored."""

    out: Path
    fmt: str
    samples: int = 0
    shards: list[str] = field(default_factory=list)
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: int = 0


def export_run(run: RunDir, out: Path, fmt: str, min_reward: float | None = None,
               shard_size: int = SHARD_SIZE, overwrite: bool = False) -> ExportSummary:
    """Write every kept image of `run` (those with a reward >= `min_reward`, when given) as
    `fmt` shards of `shard_size` samples into `out`, then OUT/_manifest.json."""
    check_options(fmt, min_reward, shard_size)
    writer_class = TarShards if fmt == "webdataset" else ParquetShards
    if fmt == "webdataset":
        import_webdataset()          # before anything is cleared or created
    cache_dir = run.cache_dir(run.load_config())
    prepare_out_dir(out, overwrite)
    summary = ExportSummary(out=out, fmt=fmt)
    writer = writer_class(out, shard_size)
    try:
        with MetaDB.reading(run.db_path, what="run database") as db:
            total, _ = db.image_stats()
            for row in db.exported_images(min_reward):
                data, why = read_image(cache_dir, row)
                if data is None:
                    summary.skipped[why] += 1
                    continue
                writer.write(row, data)
                summary.samples += 1
        summary.shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    # images the run kept while this ran are not in `total`: never a negative count
    summary.filtered = max(0, total - summary.samples - sum(summary.skipped.values()))
    summary.bytes = sum((out / name).stat().st_size for name in summary.shards)
    write_manifest(run, summary, min_reward, shard_size)
    return summary


def check_options(fmt: str, min_reward: float | None, shard_size: int) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if shard_size < 1:
        raise ExportError(f"--shard-size must be at least 1, not {shard_size}")
    if min_reward is not None and not math.isfinite(min_reward):
        raise ExportError(f"--min-reward must be a number, not {min_reward}")


def import_webdataset():
    """The webdataset package, an optional extra: without it, one line saying how to get it."""
    try:
        import webdataset
    except ImportError as e:
        raise ExportError(f"the webdataset format needs the webdataset package: {INSTALL_WEBDATASET} "
                          "(or export --format parquet)") from e
    return webdataset


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create `out`; one that holds an export (shards, a manifest) already is refused, or with
    `overwrite` has those files removed, the manifest first (never another file of the folder):
    shards of two exports never mix."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder for the export")
    ours = export_files(out)
    if ours and not overwrite:
        raise ExportError(f"{out} already holds an export ({len(ours)} files: {ours[0].name}, ...): "
                          "choose another --out, or pass --overwrite to replace it")
    for path in sorted(ours, key=lambda p: p.name != MANIFEST):
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def export_files(out: Path) -> list[Path]:
    """The files of an export in `out`: its manifest and its shards, whole or .tmp (by their
    exact names: a file of the user's is never taken for one)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name == MANIFEST or EXPORT_FILE.fullmatch(p.name))


def read_image(cache_dir: Path, row: ExportedImage) -> tuple[bytes | None, str | None]:
    """(the image file's bytes, None), or (None, why not): missing, unreadable, or damaged
    (bytes that are not those its sha256 names: a sample is keyed by it, so it must be true)."""
    path = Path(row.path)
    path = path if path.is_absolute() else cache_dir / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing"
    except OSError:
        return None, "unreadable"
    if hashlib.sha256(data).hexdigest() != row.sha256:
        return None, "damaged"
    return data, None


def sample_meta(row: ExportedImage) -> dict:
    """What a sample says of itself besides its image and caption (the webdataset .json)."""
    return {"sha256": row.sha256, "concept": row.concept, "query": row.text,
            "refinement": row.refinement, "reward": row.reward, "url": row.url,
            "round": row.round, "width": row.width, "height": row.height}


def temp_path(out: Path, name: str) -> Path:
    """Where shard `name` is written until it is whole: hidden from readers of the folder."""
    return out / f".{name}.tmp"


def commit_shard(file: BinaryIO, tmp: Path, final: Path) -> None:
    """Make a written shard durable, then give it its final name (a shard so named is whole)."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    os.replace(tmp, final)


class TarShards:
    """webdataset tar shards, through `webdataset.ShardWriter` (a new shard every `shard_size`
    samples). It opens each shard with `_open` (.NAME.tmp, a plain file: a folder named like one
    of webdataset's URL schemes is still a folder) and hands each closed one to `_commit`."""

    def __init__(self, out: Path, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.writer = None             # made at the first sample: no empty shard for no samples
        self.file: BinaryIO | None = None
        self.shards: list[str] = []

    def _open(self, name: str) -> BinaryIO:
        self.file = open(temp_path(self.out, name), "wb")
        return self.file

    def _commit(self, name: str) -> None:
        commit_shard(self.file, temp_path(self.out, name), self.out / name)
        self.file = None
        self.shards.append(name)

    def write(self, row: ExportedImage, data: bytes) -> None:
        if self.writer is None:
            self.writer = import_webdataset().ShardWriter(
                f"{SHARD_PREFIX}%06d.tar", maxcount=self.shard_size, opener=self._open,
                post=self._commit, verbose=0)
        self.writer.write({"__key__": row.sha256, "jpg": data,
                           "txt": (row.caption or "").encode("utf-8"),
                           "json": json.dumps(sample_meta(row)).encode("ascii")})

    def close(self) -> list[str]:
        if self.writer is not None:
            self.writer.close()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (never rename it as if whole); finished ones stay."""
        if self.file is not None:
            if self.writer is not None and self.writer.tarstream is not None:
                # its tar stream would flush into the closed file when collected; into the doomed one now
                with contextlib.suppress(OSError, ValueError):
                    self.writer.tarstream.close()
            self.file.close()
            Path(self.file.name).unlink(missing_ok=True)
            self.file = None


def parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("sha256", pa.string()), ("image", pa.binary()), ("caption", pa.string()),
        ("concept", pa.string()), ("query", pa.string()), ("refinement", pa.string()),
        ("reward", pa.float64()), ("url", pa.string()), ("round", pa.int64()),
        ("width", pa.int64()), ("height", pa.int64())])


class ParquetShards:
    """Parquet files of `shard_size` rows each, written a row group at a time (at most
    ROW_GROUP_ROWS rows or about ROW_GROUP_BYTES of images held in memory). JPEG bytes are
    stored uncompressed (compressing them again gains nothing); the text columns with zstd."""

    def __init__(self, out: Path, shard_size: int):
        import pyarrow.parquet as pq

        self.pq, self.out, self.shard_size = pq, out, shard_size
        self.schema = parquet_schema()
        self.compression = {name: "zstd" for name in self.schema.names} | {"image": "none"}
        self.writer = None
        self.file: BinaryIO | None = None
        self.name = ""
        self.rows_in_file = 0
        self.group: list[dict] = []
        self.group_bytes = 0
        self.shards: list[str] = []

    def write(self, row: ExportedImage, data: bytes) -> None:
        self.group.append({**sample_meta(row), "image": data, "caption": row.caption})
        self.group_bytes += len(data)
        file_full = self.rows_in_file + len(self.group) >= self.shard_size
        if file_full or len(self.group) >= ROW_GROUP_ROWS or self.group_bytes >= ROW_GROUP_BYTES:
            self._write_group()
        if file_full:
            self._commit()

    def _write_group(self) -> None:
        if not self.group:
            return
        if self.writer is None:
            self.name = f"{SHARD_PREFIX}{len(self.shards):06d}.parquet"
            self.file = open(temp_path(self.out, self.name), "wb")
            self.writer = self.pq.ParquetWriter(self.file, self.schema, compression=self.compression)
        import pyarrow as pa

        self.writer.write_table(pa.Table.from_pylist(self.group, schema=self.schema))
        self.rows_in_file += len(self.group)
        self.group, self.group_bytes = [], 0

    def _commit(self) -> None:
        self.writer.close()
        commit_shard(self.file, temp_path(self.out, self.name), self.out / self.name)
        self.shards.append(self.name)
        self.writer, self.file, self.rows_in_file = None, None, 0

    def close(self) -> list[str]:
        self._write_group()
        if self.writer is not None:
            self._commit()
        return self.shards

    def abort(self) -> None:
        """Drop the file being written (never rename it as if whole); finished ones stay."""
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):   # else it writes its footer when collected
                self.writer.close()
            self.file.close()
            temp_path(self.out, self.name).unlink(missing_ok=True)
            self.writer, self.file = None, None


def write_manifest(run: RunDir, summary: ExportSummary, min_reward: float | None, shard_size: int) -> None:
    """OUT/manifest.json, written last and atomically: the mark of a whole export, and what it
    holds (where it came from, the filter, the shards, what was skipped)."""
    manifest = {
        "run_dir": str(run.root.resolve()), "format": summary.fmt, "samples": summary.samples,
        "shards": summary.shards, "bytes": summary.bytes, "shard_size": shard_size,
        "filters": {"min_reward": min_reward,
                    "unscored": "excluded" if min_reward is not None else "included, reward null"},
        "filtered": summary.filtered, "skipped": dict(summary.skipped),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_atomic(summary.out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def summary_line(summary: ExportSummary) -> str:
    """One line for the terminal: what was written where, and what was left out and why."""
    skipped = sum(summary.skipped.values())
    why = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items()))
    return (f"exported {summary.samples} images ({summary.bytes / 1e6:.1f} MB) in {len(summary.shards)} "
            f"{summary.fmt} shards to {summary.out}; skipped {skipped}" + (f" ({why})" if why else "")
            + (f"; {summary.filtered} below --min-reward or never scored" if summary.filtered else ""))
