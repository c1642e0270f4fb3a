"""YAML loading that refuses what PyYAML silently accepts: duplicate keys and alias bombs."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from innominatus.problems import format_path

MAX_NODES = 100_000  # counted after alias expansion, so `&a [*a, *a, ...]` chains cannot explode
# Text counted after alias expansion: 10,000 references to one 50 kB string parse into shared objects,
# but become 500 MB the moment anything serialises the document (storing it, answering with it).
MAX_EXPANDED_BYTES = 1024 * 1024
MAX_DEPTH = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"
_ALIAS = re.compile(r"\*([^\s,\[\]{}]+)")
_STR_TAG = "tag:yaml.org,2002:str"


class YamlError(Exception):
    """One readable line: `source: line L, column C: problem`."""

    def __init__(
        self,
        source: str,
        problem: str,
        line: int | None = None,
        column: int | None = None,
        path: str | None = None,
    ) -> None:
        self.source = source
        self.problem = problem
        self.line = line  # 1-based
        self.column = column  # 1-based
        self.path = path  # dotted path of the offending key when known (duplicate keys)
        super().__init__(str(self))

    @property
    def detail(self) -> str:
        """The message without the source name."""
        if self.line is None:
            return self.problem
        if self.column is None:
            return f"line {self.line}: {self.problem}"
        return f"line {self.line}, column {self.column}: {self.problem}"

    def __str__(self) -> str:
        return f"{self.source}: {self.detail}"


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps and '=' values.

    Dates stay strings (as Go's yaml.v3 does into interface{}), so documents stay JSON-serialisable;
    the '=' value tag has no safe constructor and would crash on a plain `=`.
    """


StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_Loader: type = StrictLoader
_SmallLoader: type = StrictLoader
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _SmallStrictLoader(CParser, SafeConstructor, Resolver):
        """libyaml's parser and composer, for documents too short to nest deeper than the C stack
        allows (half the time of the Python composer on a spec of a few lines)."""

        yaml_implicit_resolvers = StrictLoader.yaml_implicit_resolvers

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    class _FastStrictLoader(Composer, _SmallStrictLoader):
        """libyaml's event parser (~6x faster on a 1 MiB spec) with PyYAML's Python composer, whose
        methods come first.

        libyaml's own composer recurses in C and segfaults on ~100k nested '['; the Python
        composer raises RecursionError instead.
        """

        def __init__(self, stream: str) -> None:
            _SmallStrictLoader.__init__(self, stream)
            Composer.__init__(self)

    _Loader = _FastStrictLoader
    _SmallLoader = _SmallStrictLoader

# Nesting costs at least one character a level, so a document this short recurses at most this deep
# in libyaml's composer (the one PyYAML 6.0.4 bundles stops at about 1,000 levels; older ones may not).
SMALL_DOCUMENT_CHARS = 4096


def load_yaml(text: str, source: str = "<input>") -> Any:
    """Load exactly one YAML document (None when empty); raise YamlError on anything doubtful."""
    return _load(text, source, _SmallLoader if len(text) <= SMALL_DOCUMENT_CHARS else _Loader)


def _load(text: str, source: str, loader_class: type) -> Any:
    try:
        loader = loader_class(text)  # the pure-Python reader rejects control characters right here
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        raise YamlError(source, f"malformed YAML: {_reader_problem(exc)}", line, column) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Checker(loader, source).check(node, [], 0)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        if exc.problem == "found undefined alias" and exc.problem_mark is not None:
            # libyaml's composer leaves the name out; PyYAML's says which alias.
            name = _ALIAS.match(text, exc.problem_mark.index)
            exc.problem += f" {name.group(1)!r}" if name else ""
        raise _from_marked(exc, source) from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        raise YamlError(source, f"malformed YAML: {_reader_problem(exc)}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlError(source, f"malformed YAML: {exc}") from None
    except RecursionError:
        raise YamlError(source, f"nesting is deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _from_marked(exc: yaml.MarkedYAMLError, source: str) -> YamlError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    if exc.context == "expected a single document in the stream":
        return YamlError(source, "more than one YAML document (only one is allowed)", line, column)
    parts = [p for p in (exc.context, exc.problem) if p]
    if any("nesting depth" in p for p in parts):  # PyYAML >= 6.0.4 caps flow nesting itself
        return YamlError(source, f"nesting is deeper than {MAX_DEPTH} levels", line, column)
    return YamlError(source, "malformed YAML: " + ", ".join(parts), line, column)


def _reader_problem(exc: yaml.reader.ReaderError) -> str:
    character = exc.character
    if isinstance(character, bytes):
        return f"cannot decode byte #x{character[0]:02x}: {exc.reason}"
    code = character if isinstance(character, int) else ord(character)
    return f"unacceptable character #x{code:04x}: {exc.reason}"


def _position(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


class _Checker:
    """Walks the composed node graph before construction: duplicate keys, size and depth caps."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.count = 0
        self.size = 0  # characters of scalars (keys included), every alias counted where it is used

    def check(self, node: Node, path: list[str | int], depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            problem = f"document is too large: more than {MAX_NODES} nodes after alias expansion"
            raise self._error(node, problem)
        if isinstance(node, ScalarNode):
            self._grow(node)
        if depth >= MAX_DEPTH and isinstance(node, SequenceNode | MappingNode):
            # A recursive alias (`&a [*a]`) also ends up here.
            problem = f"nesting is deeper than {MAX_DEPTH} levels (or an alias refers to itself)"
            raise self._error(node, problem)
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.check(item, [*path, index], depth + 1)
        elif isinstance(node, MappingNode):
            self._check_mapping(node, path, depth)

    def _check_mapping(self, node: MappingNode, path: list[str | int], depth: int) -> None:
        seen: dict[Any, Node] = {}
        for key_node, value_node in node.value:
            self.count += 1
            if isinstance(key_node, ScalarNode):
                self._grow(key_node)
            if key_node.tag == _MERGE_TAG:
                # `<<: *base` keys are overridden on purpose; only count what they bring in.
                self.check(value_node, path, depth + 1)
                continue
            key = self._key(key_node)
            child_path = [*path, key_node.value if isinstance(key_node, ScalarNode) else "?"]
            if key is not None and key in seen:
                first = seen[key].start_mark.line + 1
                raise self._error(
                    key_node,
                    f"duplicate key {key_node.value!r} (first defined on line {first})",
                    format_path(child_path),
                )
            if key is not None:
                seen[key] = key_node
            self.check(value_node, child_path, depth + 1)

    def _grow(self, node: ScalarNode) -> None:
        self.size += len(node.value)
        if self.size > MAX_EXPANDED_BYTES:
            problem = (
                f"document is too large: more than {MAX_EXPANDED_BYTES} characters once its aliases are "
                "expanded (a YAML alias bomb?)"
            )
            raise self._error(node, problem)

    def _key(self, key_node: Node) -> Any:
        if not isinstance(key_node, ScalarNode):
            return None
        if key_node.tag == _STR_TAG:
            return key_node.value
        # `1` and `0x1` are the same int key once constructed: compare constructed values.
        try:
            return (key_node.tag, self.loader.construct_object(key_node))
        except yaml.YAMLError:
            return (key_node.tag, key_node.value)

    def _error(self, node: Node, problem: str, path: str | None = None) -> YamlError:
        mark = node.start_mark
        return YamlError(self.source, problem, mark.line + 1, mark.column + 1, path)
