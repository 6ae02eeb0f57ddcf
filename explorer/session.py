"""The run directory: where a run's state lives, and how it is found again (ARCHITECTURE.md,
"Run directory", says which module writes each file).

RUN_DIR/config.toml        resolved config (what `resume` reads back)
RUN_DIR/explore.db         SQLite: rounds, queries, attempts, images, events
RUN_DIR/checkpoints/       latest.pt (+ round-NNNN.pt every N rounds)
RUN_DIR/rounds.jsonl       one JSON line per finished round, for other tools
RUN_DIR/budget.json        seconds of budget spent, updated by a heartbeat
RUN_DIR/plots/             reward curves and image grids (`explore rewards --plot`)
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cache.atomic import write_atomic
from cache.db import MetaDB
from explorer.config import Config
from explorer.errors import CorruptRunState, UserError


class RunLocked(UserError):
    """Another process holds the run: the command is refused in one line, having written nothing."""


@dataclass
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "explore.db"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoints / "latest.pt"

    def round_checkpoint(self, round_: int) -> Path:
        return self.checkpoints / f"round-{round_:04d}.pt"

    @property
    def rounds_log(self) -> Path:
        return self.root / "rounds.jsonl"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def budget_path(self) -> Path:
        return self.root / "budget.json"

    def exists(self) -> bool:
        return self.config_path.exists()

    def cache_dir(self, cfg: Config) -> Path:
        return Path(cfg.run.cache_dir).expanduser() if cfg.run.cache_dir else self.root / "cache"

    def load_config(self) -> Config:
        return Config.load(self.config_path)

    def save_config(self, cfg: Config) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg.save(self.config_path)

    def append_round(self, record: dict) -> None:
        """One line per finished round, in one write to an O_APPEND file. Should a kill ever
        leave a partial line, the next record starts on a fresh line and readers skip it."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.rounds_log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)

    def read_rounds(self) -> list[dict]:
        if not self.rounds_log.exists():
            return []
        out = []
        for n, line in enumerate(self.rounds_log.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash; the next run appends after it
            if not isinstance(record, dict) or "round" not in record:  # edited by hand: not ours
                raise CorruptRunState(f"{self.rounds_log} line {n} is not a round record (a JSON "
                                      f"object with a round): {line[:80]}; delete or fix that line")
            out.append(record)
        return out

    def began(self) -> bool:
        """Whether the run has begun its first round: a round in its database or rounds log,
        or a checkpoint. Until then its config is not pinned: a failed first `explore run`
        (a missing dataset, a typo) is started again with the corrected command's options."""
        if self.latest_checkpoint.exists() or self.read_rounds():
            return True
        if not self.db_path.exists():
            return False
        try:
            with MetaDB(self.db_path, readonly=True) as db:
                return db.has_rounds()
        except sqlite3.DatabaseError as e:
            # unreadable: keep what is there, the run itself then says what is wrong
            return "no such table" not in str(e)

    def lock(self) -> "RunLock":
        return RunLock(self.root / ".lock")


class RunLock:
    """One process per run directory: a second `explore run` on the same directory
    is refused with one clear line instead of corrupting it."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RunLocked(f"another explore process is using {self.path.parent}")
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Budget:
    """Wall-clock budget counted across resumes.

    Time spent is saved to budget.json by `tick()` (called often by the loop); a kill -9
    loses at most the time since the last tick, never counts time twice.
    """

    def __init__(self, run: RunDir, hours: float, clock=time.monotonic):
        self.run = run
        self.total_s = hours * 3600.0
        self.clock = clock
        self.spent_before = self._load()
        self.started = clock()

    def _load(self) -> float:
        try:
            return float(json.loads(self.run.budget_path.read_text())["spent_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    @property
    def spent_s(self) -> float:
        return self.spent_before + (self.clock() - self.started)

    @property
    def left_s(self) -> float:
        return max(0.0, self.total_s - self.spent_s)

    def exhausted(self) -> bool:
        return self.left_s <= 0.0

    def tick(self) -> None:
        write_atomic(self.run.budget_path, json.dumps({"spent_s": self.spent_s,
                                                       "total_s": self.total_s}).encode())
