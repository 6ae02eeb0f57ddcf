"""Processes below a test (fetch workers, fork servers), read from /proc: shared by the tests
that kill `explore` and by the soak (tests/soak_harness.py), which measures their memory."""
from __future__ import annotations

from pathlib import Path


def descendants(pid: int | str = "self") -> list[int]:
    """Every process below `pid`: the fetch workers are the fork server's children, not ours.
    A process or thread that ends meanwhile is skipped."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    kids: list[int] = []
    for task in tasks:
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return [p for kid in kids for p in (kid, *descendants(kid))]
