"""Workflow files (innominatus format) parsed and checked at load: parameters, steps, outputs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from innominatus.strict_yaml import YamlError, load_yaml
from innominatus.workflows.templates import Template, TemplateError, compile_template

log = logging.getLogger(__name__)

PARAMETER_TYPES = ("string", "number", "integer", "boolean", "array", "object")
DEFAULT_STEP_TIMEOUT = 300.0
DEFAULT_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 60.0
MAX_RETRIES = 100
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")


class DefinitionError(ValueError):
    """A provider or workflow file is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    has_default: bool = False
    description: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    config: dict[str, Any]
    timeout: float
    templates: dict[str, Template] = field(default_factory=dict)  # config key → compiled template
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY  # seconds before the first retry; doubles, capped
    idempotent: bool = True  # False: an interrupted run fails instead of running the step again


@dataclass(frozen=True)
class OutputSpec:
    name: str
    template: Template
    sensitive: bool = False


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    description: str
    path: Path
    parameters: tuple[Parameter, ...]
    steps: tuple[Step, ...]
    outputs: tuple[OutputSpec, ...]
    timeout: float | None = None  # the whole workflow, counted from its first start

    @property
    def sensitive_outputs(self) -> frozenset[str]:
        return frozenset(o.name for o in self.outputs if o.sensitive)


class _Fields:
    """Typed access to one mapping of a file, with errors that name file and field."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise DefinitionError(f"{where}: must be a mapping, got {_kind(data)}")
        self.data = data
        self.where = where
        for key in data:
            if key not in known:
                log.warning("%s.%s: unknown key ignored", where, key)

    def get(
        self, key: str, kind: type | tuple[type, ...], *, required: bool = False, default: Any = None
    ) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise DefinitionError(f"{self.where}.{key}: is required")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise DefinitionError(f"{self.where}.{key}: must be {_names(kind)}, got boolean")
        if not isinstance(value, kind):
            raise DefinitionError(f"{self.where}.{key}: must be {_names(kind)}, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), type(value).__name__ if value is not None else "null")


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {
            dict: "a mapping",
            list: "a list",
            str: "a string",
            bool: "a boolean",
            int: "an integer",
            float: "a number",
        }.get(k, k.__name__)
        for k in kinds
    )


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise DefinitionError(f"{where}: must be seconds or a duration like '30s', got boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value).strip())
        if not match:
            raise DefinitionError(f"{where}: must be seconds or a duration like '30s', '5m', got {value!r}")
        factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]
        seconds = float(match.group(1)) * factor
    if seconds <= 0:
        raise DefinitionError(f"{where}: must be positive, got {value!r}")
    return seconds


def read_yaml_file(path: Path, display: str, missing: str) -> Any:
    """A platform file (provider, workflow, admin config) as YAML; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(f"{display}: {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{display}: cannot read: {exc}") from None
    try:
        return load_yaml(text, display)
    except YamlError as exc:
        raise DefinitionError(str(exc)) from None


def load_workflow(
    path: Path, *, display: str, step_types: dict[str, Any], platform: Any = None
) -> WorkflowDefinition:
    """Parse and validate one workflow file; compile every template it holds."""
    doc = read_yaml_file(path, display, "workflow file not found")
    top = _Fields(
        doc, display, {"apiVersion", "kind", "metadata", "parameters", "steps", "outputs", "timeout"}
    )
    kind = top.get("kind", str)
    if kind is not None and kind != "Workflow":
        raise DefinitionError(f"{display}.kind: must be 'Workflow', got {kind!r}")
    top.get("apiVersion", str)
    meta = _Fields(
        top.get("metadata", dict, required=True),
        f"{display}.metadata",
        {"name", "description", "labels", "annotations", "version"},
    )
    name = meta.get("name", str, required=True)
    description = meta.get("description", str, default="")

    parameters = tuple(
        _parameter(p, f"{display}.parameters[{i}]")
        for i, p in enumerate(top.get("parameters", list, default=[]))
    )
    seen_params: set[str] = set()
    for p in parameters:
        if p.name in seen_params:
            raise DefinitionError(f"{display}.parameters: '{p.name}' is declared twice")
        seen_params.add(p.name)

    raw_steps = top.get("steps", list, required=True)
    if not raw_steps:
        raise DefinitionError(f"{display}.steps: must hold at least one step")
    step_names = [s.get("name") for s in raw_steps if isinstance(s, dict) and isinstance(s.get("name"), str)]
    steps: list[Step] = []
    for i, raw in enumerate(raw_steps):
        step = _step(raw, f"{display}.steps[{i}]", step_types, step_names, platform)
        if any(s.name == step.name for s in steps):
            raise DefinitionError(f"{display}.steps[{i}].name: '{step.name}' is used by an earlier step")
        steps.append(step)

    outputs: list[OutputSpec] = []
    for key, value in (top.get("outputs", dict, default={}) or {}).items():
        where = f"{display}.outputs.{key}"
        sensitive = False
        if isinstance(value, dict):
            spec = _Fields(value, where, {"value", "sensitive", "description"})
            source = spec.get("value", (str, int, float), required=True)
            sensitive = bool(spec.get("sensitive", bool, default=False))
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            source = value
        else:
            raise DefinitionError(
                f"{where}: must be a template string or {{value, sensitive}}, got {_kind(value)}"
            )
        template = _compile(str(source), where, shell=False, step_names=step_names)
        outputs.append(OutputSpec(name=str(key), template=template, sensitive=sensitive))
    timeout = parse_duration(doc["timeout"], f"{display}.timeout") if doc.get("timeout") is not None else None
    return WorkflowDefinition(
        name=name,
        description=description,
        path=path,
        parameters=parameters,
        steps=tuple(steps),
        outputs=tuple(outputs),
        timeout=timeout,
    )


def _parameter(raw: Any, where: str) -> Parameter:
    f = _Fields(raw, where, {"name", "type", "required", "default", "description"})
    ptype = f.get("type", str, default="string")
    if ptype not in PARAMETER_TYPES:
        raise DefinitionError(f"{where}.type: must be one of {', '.join(PARAMETER_TYPES)}, got {ptype!r}")
    name = f.get("name", str, required=True)
    default = raw.get("default")
    if default is not None and not value_has_type(ptype, default):
        raise DefinitionError(
            f"{where}.default: parameter '{name}' is of type {ptype}, but its default is {_kind(default)} "
            f"{default!r}"
        )
    return Parameter(
        name=name,
        type=ptype,
        required=f.get("required", bool, default=False),
        default=default,
        has_default=default is not None,
        description=f.get("description", str, default=""),
    )


_PARAMETER_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def value_has_type(ptype: str, value: Any) -> bool:
    """Whether `value` is of parameter type `ptype` (a boolean is not a number; strings are not coerced)."""
    if isinstance(value, bool) and ptype != "boolean":
        return False
    return isinstance(value, _PARAMETER_PYTHON_TYPES[ptype])


def _step(raw: Any, where: str, step_types: dict[str, Any], step_names: list[str], platform: Any) -> Step:
    # Keys other versions know (`when`, `env`...) are not implemented here: they are warned about as
    # unknown keys rather than silently accepted.
    f = _Fields(
        raw,
        where,
        {"name", "type", "config", "timeout", "description", "retries", "retryDelay", "idempotent"},
    )
    name = f.get("name", str, required=True)
    stype = f.get("type", str, required=True)
    if stype not in step_types:
        raise DefinitionError(
            f"{where}.type: unknown step type {stype!r}; known step types: {', '.join(sorted(step_types))}"
        )
    config = f.get("config", dict, default={})
    timeout = (
        parse_duration(raw["timeout"], f"{where}.timeout")
        if raw.get("timeout") is not None
        else DEFAULT_STEP_TIMEOUT
    )
    templates: dict[str, Template] = {}
    for key, shell in step_types[stype].template_fields(config, f"{where}.config", platform):
        templates[key] = _compile(config[key], f"{where}.config.{key}", shell=shell, step_names=step_names)
    retries = f.get("retries", int, default=0)
    if not 0 <= retries <= MAX_RETRIES:
        raise DefinitionError(f"{where}.retries: must be between 0 and {MAX_RETRIES}, got {retries}")
    retry_delay = (
        parse_duration(raw["retryDelay"], f"{where}.retryDelay")
        if raw.get("retryDelay") is not None
        else DEFAULT_RETRY_DELAY
    )
    return Step(
        name=name,
        type=stype,
        config=config,
        timeout=timeout,
        templates=templates,
        retries=retries,
        retry_delay=min(retry_delay, MAX_RETRY_DELAY),
        idempotent=f.get("idempotent", bool, default=True),
    )


def _compile(source: str, where: str, *, shell: bool, step_names: list[str]) -> Template:
    try:
        return compile_template(source, where=where, shell=shell, step_names=step_names)
    except TemplateError as exc:
        raise DefinitionError(str(exc)) from None
