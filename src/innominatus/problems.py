"""A single validation finding, shared by the Score parser and the placeholder checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    path: str  # dotted path, "" for the document root; a '.' inside a key is written '\.'
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_path(parts: Iterable[str | int]) -> str:
    """Join path parts with '.', escaping dots (and backslashes) inside keys like Score placeholders do."""
    return ".".join(str(p).replace("\\", "\\\\").replace(".", "\\.") for p in parts)
