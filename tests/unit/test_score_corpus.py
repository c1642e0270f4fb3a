"""Every real-world Score file in the shared corpus parses (or fails) as SOURCES.md says.

The corpus lives beside the checkout; without it these tests are skipped.
"""

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from innominatus.score import Problem, SpecError, parse_spec

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "score-corpus"

# innominatus accepts these two keys (merged into variables / params), so the official schema's
# complaint about them does not apply here.
EXTENSIONS = {("containers", "env"), ("resources", "properties")}

Expectation = tuple[str, Callable[[Problem], bool]]
ADDITIONAL = r"(/\S*): Additional properties are not allowed \((.+) (?:was|were) unexpected\)"


def _rows(section: str) -> list[list[str]]:
    text = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    body = text.split(f"## Expected {section}", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line in body.splitlines()
        if line.startswith("| `")
    ]


def _path(pointer: str) -> list[str]:
    return [p for p in pointer.split("/") if p]


def _expectations(reasons: str) -> list[Expectation]:
    """Turn the validator output listed in SOURCES.md into checks on our problems."""
    found: list[Expectation] = []
    for reason in filter(None, (r.strip() for r in reasons.split(";"))):
        if m := re.fullmatch(r"(/\S*): '(\S+)' is a required property", reason):
            path = ".".join([*_path(m[1]), m[2]])
            found.append((reason, lambda p, path=path: (p.path, p.message) == (path, "is required")))
        elif m := re.fullmatch(ADDITIONAL, reason):
            parent = _path(m[1])
            for key in re.findall(r"'([^']+)'", m[2]):
                if len(parent) == 2 and (parent[0], key) in EXTENSIONS:
                    continue
                path = ".".join([*parent, key])
                found.append((reason, lambda p, path=path: (p.path, p.message) == (path, "is not allowed")))
        elif m := re.fullmatch(r"/apiVersion: '(.+)' does not match .*", reason):
            message = f"must be 'score.dev/v1b1', got '{m[1]}'"
            found.append((reason, lambda p, message=message: (p.path, p.message) == ("apiVersion", message)))
        elif m := re.fullmatch(r"placeholder (\$\{[^}]+\}) unsupported root (\S+)", reason):
            message = f"{m[1]}: unknown placeholder root '{m[2]}'"
            found.append((reason, lambda p, message=message: p.message.startswith(message)))
        elif m := re.fullmatch(r"placeholder (\$\{[^}]+\}) -> unknown resource (\S+)", reason):
            message = f"{m[1]}: references undeclared resource '{m[2]}'"
            found.append((reason, lambda p, message=message: p.message == message))
        else:
            raise AssertionError(f"SOURCES.md reason not understood: {reason!r}")
    return found


def _cases() -> list[object]:
    if not (CORPUS / "SOURCES.md").is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no corpus at {CORPUS}"))]
    cases: list[object] = []
    for row in _rows("VALID"):
        name = row[0].strip("`")
        cases.append(pytest.param(name, [], id=name))
    for row in _rows("INVALID"):
        name = row[0].strip("`")
        # A file whose only complaints are our extensions (postgres-real-app) must now be valid.
        cases.append(pytest.param(name, _expectations(row[-1]), id=name))
    return cases


@pytest.mark.parametrize(("name", "expected"), _cases())
def test_corpus_file(name: str, expected: list[Expectation]) -> None:
    text = (CORPUS / name).read_bytes()
    if not expected:
        parse_spec(text)
        return
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    problems = info.value.problems
    for reason, matches in expected:
        assert any(matches(p) for p in problems), f"{reason!r} not among {[str(p) for p in problems]}"


def test_corpus_tables_are_complete() -> None:
    if not (CORPUS / "SOURCES.md").is_file():
        pytest.skip(f"no corpus at {CORPUS}")
    listed = {row[0].strip("`") for row in _rows("VALID") + _rows("INVALID")}
    on_disk = {p.name for p in CORPUS.glob("*.yaml")}
    assert listed == on_disk
    assert len(_rows("VALID")) == 52
    assert len(_rows("INVALID")) == 9
