"""Parse, validate and normalise a Score workload spec (score.dev/v1b1 plus innominatus extensions).

Extensions, everything else stays as strict as the official schema:
- `resources.*.properties`: merged into `params`;
- `containers.*.env`: an alias of `variables`, merged into it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources as importlib_resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from innominatus.placeholders import check_spec
from innominatus.problems import Problem, format_path
from innominatus.strict_yaml import YamlError, load_yaml

__all__ = ["MAX_SPEC_BYTES", "Problem", "ScoreResource", "ScoreSpec", "SpecError", "parse_spec"]

MAX_SPEC_BYTES = 1024 * 1024


class SpecError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"invalid Score spec: {problems[0]}{more}")


@dataclass(frozen=True)
class ScoreResource:
    name: str
    type: str
    class_: str | None
    id: str | None
    params: dict[str, Any]  # `properties` merged with `params`
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    metadata: dict[str, Any]
    containers: dict[str, Any]  # `env` merged into `variables`
    resources: dict[str, ScoreResource]
    service: dict[str, Any] | None
    document: dict[str, Any]  # as written, for storage and diffing


def parse_spec(text: str | bytes, known_types: Collection[str] | None = None) -> ScoreSpec:
    """Parse one Score document; raise SpecError listing every problem found."""
    document, problems = _load(text)
    if document is None:
        raise SpecError(problems)
    problems = [
        *_key_problems(document, ()),
        *_schema_problems(document),
        *_conflicts(document),
        *check_spec(document),
        *_type_problems(document, known_types),
    ]
    if problems:
        raise SpecError(sorted(set(problems)))
    return _normalise(document)


def _load(text: str | bytes) -> tuple[dict[str, Any] | None, list[Problem]]:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_SPEC_BYTES:
        return None, [Problem("", f"is larger than 1 MiB ({len(raw)} bytes)")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            return None, [Problem("", f"is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})")]
    try:
        document = load_yaml(text, "spec")
    except YamlError as exc:
        return None, [Problem(exc.path or "", exc.detail)]
    if document is None:
        return None, [Problem("", "must be a mapping, got an empty document")]
    if not isinstance(document, dict):
        return None, [Problem("", f"must be a mapping, got {_type_name(document)}")]
    return document, []


def _type_name(value: Any) -> str:
    """The YAML-ish name of a value's type, as users read it in messages."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else type(value).__name__


@cache
def _validator() -> Any:
    return _ExactValidator(_inlined(_referenced_schema()))


@cache
def _referenced_schema() -> dict[str, Any]:
    """The official Score schema with innominatus's extensions, as written (with its references)."""
    source = importlib_resources.files("innominatus") / "schemas" / "score-v1b1.json"
    schema = copy.deepcopy(json.loads(source.read_text(encoding="utf-8")))
    defs = schema["$defs"]
    defs["resource"]["properties"]["properties"] = {
        "description": "innominatus extension: merged into params.",
        "type": "object",
        "additionalProperties": True,
    }
    defs["container"]["properties"]["env"] = {
        **copy.deepcopy(defs["container"]["properties"]["variables"]),
        "description": "innominatus extension: an alias of variables, merged into it.",
    }
    Draft202012Validator.check_schema(schema)
    return schema


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each `$ref` replaced by what it names: resolving a reference on every use was
    a third of a validation. The Score schema's references are local and not recursive, and their only
    siblings are descriptions, so nothing else changes (test_score compares the two)."""
    defs = schema["$defs"]

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            if name in seen or name not in defs or set(node) - {"$ref", "description"}:
                raise ValueError(f"score schema: cannot inline {node['$ref']!r}")
            return resolve(defs[name], (*seen, name))
        return {key: resolve(value, seen) for key, value in node.items() if key != "$defs"}

    return resolve(schema, ())


def _exact_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _exact(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _exact(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are searched with Python's `re`, whose `$` also matches before a final
    # newline: "shop\n" would pass `^[a-z0-9-]+$`. Anchored at the very end instead.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


# The official schema, with `pattern` matching whole strings only.
_ExactValidator = validators.extend(Draft202012Validator, {"pattern": _exact_pattern})


def _key_problems(value: Any, path: tuple[Any, ...]) -> Iterator[Problem]:
    # YAML allows `8080: x` or `null: x`; JSON (and the schema) only has string keys.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield Problem(format_path((*path, key)), f"key must be a string, got {_type_name(key)}")
            yield from _key_problems(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _key_problems(item, (*path, index))


def _merge_pairs(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str, tuple[str, ...]]]:
    """(owner, extension field, standard field, path) for every extension used."""
    for name, container in _mapping(document.get("containers")).items():
        if isinstance(container, dict) and "env" in container:
            yield container, "env", "variables", ("containers", name)
    for name, resource in _mapping(document.get("resources")).items():
        if isinstance(resource, dict) and "properties" in resource:
            yield resource, "properties", "params", ("resources", name)


def _conflicts(document: dict[str, Any]) -> Iterator[Problem]:
    for owner, extra, standard, path in _merge_pairs(document):
        extension, base = owner.get(extra), owner.get(standard)
        if isinstance(extension, dict) and isinstance(base, dict):
            for key in extension.keys() & base.keys():
                if extension[key] != base[key]:
                    message = f"conflicts with {format_path((standard, key))}"
                    yield Problem(format_path((*path, extra, key)), message)


def _type_problems(document: dict[str, Any], known_types: Collection[str] | None) -> Iterator[Problem]:
    if known_types is None:
        return
    known = ", ".join(sorted(known_types)) or "(none)"
    for name, resource in _mapping(document.get("resources")).items():
        kind = resource.get("type") if isinstance(resource, dict) else None
        if isinstance(kind, str) and kind not in known_types:
            path = format_path(("resources", name, "type"))
            yield Problem(path, f"unknown resource type {kind!r}; known types: {known}")


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def normalise_containers(containers: dict[str, Any]) -> dict[str, Any]:
    """A copy of the containers with the `env` alias merged into `variables`."""
    out: dict[str, Any] = {}
    for name, container in containers.items():
        normal = copy.deepcopy(container)
        env = normal.pop("env", None)
        if env is not None:
            normal["variables"] = {**env, **normal.get("variables", {})}
        out[name] = normal
    return out


def _normalise(document: dict[str, Any]) -> ScoreSpec:
    containers = normalise_containers(document["containers"])
    resources = {
        name: ScoreResource(
            name=name,
            type=res["type"],
            class_=res.get("class"),
            id=res.get("id"),
            params=copy.deepcopy({**res.get("properties", {}), **res.get("params", {})}),
            metadata=copy.deepcopy(res.get("metadata", {})),
        )
        for name, res in (document.get("resources") or {}).items()
    }
    metadata = document["metadata"]
    service = document.get("service")
    return ScoreSpec(
        name=metadata["name"],
        metadata=copy.deepcopy(metadata),
        containers=containers,
        resources=resources,
        service=copy.deepcopy(service) if service is not None else None,
        document=document,
    )


# --- JSON-schema errors → Problems ---------------------------------------------------------------

_LABEL = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$"
_PATTERN_HINTS = {
    _LABEL: "must be lowercase letters, digits and '-', not starting or ending with '-'",
    "^[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]$": "must be letters, digits and '-', "
    "not starting or ending with '-'",
    r"^[a-z0-9]+(?:-+[a-z0-9]+)*(?:\.[a-z0-9]+(?:-+[a-z0-9]+)*)*$": "must be '.'-separated labels "
    "of lowercase letters, digits and '-', not starting or ending with '-'",
    r"^(0\.\d+|[1-9]\d*(\.\d+)?)(K|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$": "must be a memory quantity "
    "like 512Mi or 1.5G",
    r"^\d+(?:m|\.\d+)?$": "must be whole or fractional CPUs like 2, 0.5 or 250m",
    "^0?[0-7]{3}$": "must be an octal file mode like 0644",
    "^[^=]+$": "must not contain '='",
    "^[A-Za-z0-9_-]+$": "must be letters, digits, '_' and '-'",
    r"^(([a-z0-9][a-z0-9-]{0,61}[a-z0-9])(\.[a-z0-9][a-z0-9-]{0,61}[a-z0-9])*/)?"
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,61}[A-Za-z0-9]$": "must be letters, digits, '.', '_' and '-' "
    "with an optional DNS-name prefix and '/'",
}
_ARTICLE_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def _schema_problems(document: dict[str, Any]) -> Iterator[Problem]:
    for error in _validator().iter_errors(document):
        yield from _convert(error)


def _convert(error: ValidationError) -> Iterator[Problem]:
    path = tuple(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad key at its parent's path, with the key as the instance.
        yield Problem(format_path((*path, instance)), f"is not a valid name: {_constraint(error)}")
    elif kind == "required" and isinstance(instance, dict):
        for key in value:
            if key not in instance:
                yield Problem(format_path((*path, key)), "is required")
    elif kind == "additionalProperties" and isinstance(instance, dict):
        declared = error.schema.get("properties", {})
        for key in instance:
            if key not in declared:
                yield Problem(format_path((*path, key)), "is not allowed")
    elif kind == "not" and isinstance(instance, dict) and value.get("required"):
        # The map form of files/volumes forbids `target`: the map key is the target.
        for key in value["required"]:
            yield Problem(format_path((*path, key)), "is not allowed here (only in the deprecated list form)")
    elif kind in ("oneOf", "anyOf"):
        yield from _convert_alternatives(error, path)
    elif path == ("apiVersion",) and kind == "pattern":
        yield Problem("apiVersion", f"must be 'score.dev/v1b1', got {_show(instance)}")
    else:
        message = _constraint(error)
        if kind not in ("additionalProperties", "required", "minProperties", "maxProperties"):
            message += f", got {_show(instance) if kind != 'type' else _type_name(instance)}"
        yield Problem(format_path(path), message)


def _convert_alternatives(error: ValidationError, path: tuple[Any, ...]) -> Iterator[Problem]:
    alternatives = error.validator_value
    required_only = [a.get("required") for a in alternatives if set(a) == {"required"}]
    if len(required_only) == len(alternatives):
        # e.g. a file needs one of content/binaryContent/source, a probe httpGet or exec
        names = ", ".join(repr(k) for keys in required_only for k in keys)
        exactly = "exactly one" if error.validator == "oneOf" else "at least one"
        yield Problem(format_path(path), f"must set {exactly} of {names}")
        return
    if not error.context:
        yield Problem(format_path(path), "matches more than one of the allowed forms")
        return
    if all(e.validator == "type" and len(e.absolute_path) == len(path) for e in error.context):
        names = [str(e.validator_value) for e in error.context]
        expected = " or ".join(_ARTICLE_TYPES.get(n, n) for n in names)
        yield Problem(format_path(path), f"must be {expected}, got {_type_name(error.instance)}")
        return
    # The alternative that got furthest into the document is the one the author meant.
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    chosen = max(branches.values(), key=lambda errors: max(len(e.absolute_path) for e in errors))
    for sub in chosen:
        yield from _convert(sub)


def _constraint(error: ValidationError) -> str:
    kind, value = error.validator, error.validator_value
    if kind == "type":
        names = [value] if isinstance(value, str) else value
        return "must be " + " or ".join(_ARTICLE_TYPES.get(n, n) for n in names)
    if kind == "pattern":
        return _PATTERN_HINTS.get(value, f"must match the pattern {value!r}")
    if kind == "enum":
        return "must be one of " + ", ".join(_show(v) for v in value)
    if kind == "minLength":
        return f"must be at least {value} character{'s' if value != 1 else ''} long"
    if kind == "maxLength":
        return f"must be at most {value} characters long"
    if kind == "minimum":
        return f"must be at least {value}"
    if kind == "maximum":
        return f"must be at most {value}"
    if kind == "minProperties":
        return "must not be empty" if value == 1 else f"must have at least {value} entries"
    return _clean(error.message)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _clean(message: str) -> str:
    message = re.sub(r"\s+", " ", message)
    return message if len(message) <= 200 else message[:197] + "..."
