"""Errors that are the user's to fix: printed as one line by the CLI, never a traceback.

Each message says what is wrong, with which file, and what to do about it. Anything else that
escapes a command is a bug and keeps its traceback. `UserError`, `CorruptRunState` and
`first_line` are the cache's (cache/errors.py), which cannot import from here.
"""

from cache.errors import CorruptRunState, UserError, first_line

__all__ = ["UserError", "CorruptRunState", "BadCheckpoint", "CheckpointNotSaved", "SearchUnavailable",
           "BadSetting", "first_line"]


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
