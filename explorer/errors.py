"""Errors that are the user's to fix: printed as one line by the CLI, never a traceback.

Each message says what is wrong, with which file, and what to do about it. Anything else that
escapes a command is a bug and keeps its traceback.
"""


class UserError(Exception):
    pass


class CorruptRunState(UserError):
    """A run's or a cache's own files (database, rounds log, index) cannot be read."""


class BadCheckpoint(UserError):
    """A checkpoint that cannot be loaded: unreadable, not weights-only, or another model's."""


class CheckpointNotSaved(UserError):
    """A checkpoint could not be written (a full disk, a read-only folder)."""


class SearchUnavailable(UserError):
    """The search engine kept failing past crawl.search_patience_s: the run stops, resumable,
    with its own exit code so that a script can tell "try later" from a mistake."""

    exit_code = 3


class BadSetting(UserError):
    """A config value that this machine cannot honour (a device it does not have)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message: libraries (torch, faiss) write whole pages."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
