"""Where a cache's files live on disk: the one module that knows the layout.

    CACHE_DIR/images/ab/<sha256>.jpg     content-addressed image files (store.py), shared by runs
    CACHE_DIR/explore.db                 the metadata of `explore fetch` (a run keeps its own
                                         database in its run directory instead)
    <DB>.lock                            the writer lock beside a database (db.WriterLock)
    <DB's folder>/index/<name>.faiss     the near-duplicate index beside the database it serves
"""
from __future__ import annotations

from pathlib import Path

DB_NAME = "explore.db"
IMAGES_DIR = "images"
INDEX_DIR = "index"


def image_relpath(sha256: str) -> str:
    """Where the image with this sha256 lives, relative to the cache's root."""
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}.jpg"


def db_path_for(cache_dir: str | Path, db_path: str | Path | None = None) -> Path:
    """The database a cache is read with: `db_path` (a run's own) or CACHE_DIR/explore.db."""
    return Path(db_path) if db_path else Path(cache_dir) / DB_NAME


def lock_path_for(db_path: str | Path) -> Path:
    """The writer lock of a database, beside it."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".lock")


def index_path_for(cache_dir: str | Path, db_path: str | Path | None = None, index_name: str = "cheap") -> Path:
    """Where the near-duplicate index lives: beside the database whose rows its ids point to
    (CACHE_DIR/index/ for a cache's own DB, RUN_DIR/index/ for a run's). The image files are
    content-addressed and shared by every run of a CACHE_DIR; an index shared by runs with
    their own DBs would mix their ids, and one run's images would turn another's into
    near-duplicates that it never keeps."""
    home = Path(db_path).parent if db_path else Path(cache_dir)
    return home / INDEX_DIR / f"{index_name}.faiss"
