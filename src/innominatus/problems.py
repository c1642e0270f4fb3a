"""A single validation finding, shared by the Score parser and the placeholder checks."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    path: str  # dotted path, "" for the document root; a '.' inside a key is written '\.'
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_path(parts: Iterable[str | int]) -> str:
    """Join path parts with '.', escaping dots (and backslashes) inside keys like Score placeholders do;
    control and line-separator characters show as escapes (`\\n`), never as themselves."""
    return ".".join(_key(str(p)) for p in parts)


def _key(part: str) -> str:
    out = part.replace("\\", "\\\\").replace(".", "\\.")
    if any(unicodedata.category(c) in _UNPRINTABLE for c in out):
        out = "".join(
            c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNPRINTABLE else c
            for c in out
        )
    return out


_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
