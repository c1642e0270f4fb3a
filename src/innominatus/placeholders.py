"""Score placeholders: `${metadata.KEY...}`, `${resources.NAME[.KEY...]}`, `$$` escapes.

One rule is stricter than score-go: `$$${x}` is refused, since it could mean `$` followed by a
placeholder or an escaped `$$` followed by literal text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from innominatus.problems import Problem, format_path

ROOTS = ("metadata", "resources")


@dataclass(frozen=True)
class Reference:
    root: str  # "metadata" or "resources"
    parts: tuple[str, ...]  # unescaped path after the root, e.g. ("database", "connection_string")
    text: str  # the original "${...}" text


class PlaceholderError(ValueError):
    def __init__(self, message: str, placeholder: str = "") -> None:
        super().__init__(message)
        self.placeholder = placeholder


Segment = str | Reference


def parse_string(text: str) -> list[Segment]:
    """Split a string into literal text and references; raise PlaceholderError on the first error."""
    segments, errors = _scan(text)
    if errors:
        raise errors[0]
    return segments


def find_references(value: Any) -> list[Reference]:
    """Every reference in every string inside value (dict values and list items, recursively)."""
    found: list[Reference] = []
    for _, text in _strings(value, ()):
        found.extend(s for s in parse_string(text) if isinstance(s, Reference))
    return found


def substitute(value: Any, resolve: Callable[[Reference], Any]) -> Any:
    """A copy of value with each placeholder replaced by resolve(reference), rendered as text.

    Strings are used as they are; anything else is rendered as JSON (`5`, `true`, `{"a": 1}`).
    """
    if isinstance(value, str):
        if "$" not in value:
            return value
        return "".join(s if isinstance(s, str) else _render(resolve(s)) for s in parse_string(value))
    if isinstance(value, dict):
        return {k: substitute(v, resolve) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, resolve) for v in value]
    return value


def substitute_spec(document: dict[str, Any], resolve: Callable[[Reference], Any]) -> dict[str, Any]:
    """A copy of a Score document with placeholders replaced only where Score expands them."""
    copy = deepcopy(document)
    for parent, key, _ in _expandable(copy):
        parent[key] = substitute(parent[key], resolve)
    return copy


def check_spec(document: dict[str, Any]) -> list[Problem]:
    """Syntax errors and dangling references in the places Score expands placeholders."""
    metadata = document.get("metadata")
    resources = document.get("resources")
    declared = resources if isinstance(resources, dict) else {}
    problems: list[Problem] = []
    for parent, key, path in _expandable(document):
        for string_path, text in _strings(parent[key], path):
            segments, errors = _scan(text)
            where = format_path(string_path)
            problems.extend(Problem(where, str(error)) for error in errors)
            for ref in (s for s in segments if isinstance(s, Reference)):
                message = _dangling(ref, metadata, declared)
                if message:
                    problems.append(Problem(where, message))
    return problems


def _dangling(ref: Reference, metadata: Any, declared: dict[str, Any]) -> str | None:
    if ref.root == "resources":
        if ref.parts[0] not in declared:
            return f"{ref.text}: references undeclared resource {ref.parts[0]!r}"
        return None  # outputs are only known once the resource is provisioned
    node = metadata
    for depth, part in enumerate(ref.parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return f"{ref.text}: metadata has no key {format_path(ref.parts[: depth + 1])!r}"
    return None


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _expandable(document: dict[str, Any]) -> Iterator[tuple[Any, Any, tuple[str | int, ...]]]:
    """(parent, key, path) of each value whose strings Score expands.

    Never command, args, image, binaryContent or noExpand files: those are passed through as written.
    """
    containers = document.get("containers")
    for cname, container in _items(containers):
        if not isinstance(container, dict):
            continue
        base = ("containers", cname)
        for field in ("variables", "env"):
            if isinstance(container.get(field), dict):
                yield container, field, (*base, field)
        for fkey, file in _items(container.get("files")):
            if isinstance(file, dict) and file.get("noExpand") is not True and "content" in file:
                yield file, "content", (*base, "files", fkey, "content")
        for vkey, volume in _items(container.get("volumes")):
            if isinstance(volume, dict) and "source" in volume:
                yield volume, "source", (*base, "volumes", vkey, "source")
    for rname, resource in _items(document.get("resources")):
        if isinstance(resource, dict):
            for field in ("params", "properties"):
                if field in resource:
                    yield resource, field, ("resources", rname, field)


def _items(value: Any) -> Iterator[tuple[Any, Any]]:
    """Entries of the map form and of the deprecated list form alike."""
    if isinstance(value, dict):
        yield from value.items()
    elif isinstance(value, list | tuple):
        yield from enumerate(value)


def _strings(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield path, value
    else:
        for key, item in _items(value):
            yield from _strings(item, (*path, key))


def _scan(text: str) -> tuple[list[Segment], list[PlaceholderError]]:
    """Tokenise, collecting every error instead of stopping at the first."""
    segments: list[Segment] = []
    errors: list[PlaceholderError] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        dollar = text.find("$", i)
        if dollar < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:dollar])
        j = dollar
        while j < n and text[j] == "$":
            j += 1
        run = j - dollar
        if j >= n or text[j] != "{":
            literal.append("$" * (run // 2 + run % 2))  # `$$` is one `$`; a lone `$` stays
            i = j
            continue
        if run % 2 == 0:
            literal.append("$" * (run // 2))  # `$${x}` is the literal text `${x}`
            i = j
            continue
        end = _closing_brace(text, j + 1)
        if run > 1:
            # `$$${x}`: an escaped `$` then a placeholder, or `$` then the literal `${x}`? Refuse.
            shown = text[dollar : (end + 1 if end >= 0 else n)]
            message = (
                f"{shown}: ambiguous '$' before a placeholder; write '$${{...}}' for the literal "
                "text '${...}' or put something between '$$' and '${'"
            )
            errors.append(PlaceholderError(message, shown))
            if end < 0:
                break
            i = end + 1
            continue
        if end < 0:
            shown = text[dollar:]
            errors.append(PlaceholderError(f"{shown}: unterminated placeholder, missing '}}'", shown))
            break
        ref_text = text[dollar : end + 1]
        try:
            ref = _reference(ref_text)
        except PlaceholderError as exc:
            errors.append(exc)
        else:
            if "".join(literal):
                segments.append("".join(literal))
            literal = []
            segments.append(ref)
        i = end + 1
    if literal and "".join(literal):
        segments.append("".join(literal))
    return segments, errors


def _closing_brace(text: str, start: int) -> int:
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == "}":
            return i
        else:
            i += 1
    return -1


def _reference(ref_text: str) -> Reference:
    content = ref_text[2:-1]
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(content):
        char = content[i]
        if char == "\\":
            if i + 1 >= len(content):
                raise PlaceholderError(f"{ref_text}: ends with a lone '\\'", ref_text)
            current.append(content[i + 1])
            i += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        elif char in "${":
            raise PlaceholderError(f"{ref_text}: placeholders cannot be nested", ref_text)
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    if parts == [""]:
        raise PlaceholderError(f"{ref_text}: empty placeholder", ref_text)
    if "" in parts:
        raise PlaceholderError(f"{ref_text}: empty key (write '\\.' for a '.' inside a key)", ref_text)
    root, rest = parts[0], tuple(parts[1:])
    if root not in ROOTS:
        raise PlaceholderError(
            f"{ref_text}: unknown placeholder root {root!r} (expected 'metadata' or 'resources')", ref_text
        )
    if not rest:
        what = "a key" if root == "metadata" else "a resource name"
        raise PlaceholderError(f"{ref_text}: needs {what} after {root!r}", ref_text)
    return Reference(root, rest, ref_text)
