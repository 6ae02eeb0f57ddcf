"""Untrusted text on the terminal: what came from the web, a vocabulary file, a folder or the
database is shown as text, never obeyed as Rich markup or as terminal escape sequences."""
from __future__ import annotations

import unicodedata

from rich.text import Text

# Control (Cc), format (Cf: bidi overrides, zero-width marks), line/paragraph separators and
# lone surrogates: a terminal acts on them or the encoder chokes on them, a reader cannot see them.
HIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def visible(value: object) -> str:
    """`value` as a one-line string whose invisible characters are written as escapes (\\x1b,
    \\u202e, \\n); everything else is kept, Rich markup included (it is not parsed here)."""
    text = str(value)
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in HIDDEN_CATEGORIES else ch for ch in text)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def plain(value: object, style: str = "") -> Text:
    """`value` as a Rich Text (never parsed as markup), invisible characters made visible: what
    a table cell or a console line of untrusted text is given."""
    return Text(visible(value), style=style)
