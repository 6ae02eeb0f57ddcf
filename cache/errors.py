"""The cache's errors that are the user's to fix: one line on the terminal, never a traceback.

They live here because storage imports nothing from the crawl or the loop that fill it;
explorer.errors builds the rest of the program's user errors on `UserError`.
"""


class UserError(Exception):
    pass


class CorruptRunState(UserError):
    """A run's or a cache's own files (database, rounds log, index) cannot be read."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message: libraries (torch, faiss) write whole pages."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
