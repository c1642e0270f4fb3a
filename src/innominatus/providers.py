"""The provider catalog: loads provider manifests and their workflows, and is THE place that
resolves a resource (type, operation, class) to the workflow that serves it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from innominatus.admin_config import AdminConfig, load_admin_config
from innominatus.states import Operation
from innominatus.workflows.definition import (
    DefinitionError,
    WorkflowDefinition,
    _Fields,
    _kind,
    load_workflow,
    read_yaml_file,
)
from innominatus.workflows.steps import STEP_TYPES

log = logging.getLogger(__name__)

OPERATIONS = tuple(op.value for op in Operation)


class CatalogError(DefinitionError):
    """The catalog cannot be built; the server refuses to start with this message."""


class ResolveError(LookupError):
    """No workflow serves this resource/operation; the message says which and why."""


@dataclass(frozen=True)
class WorkflowRef:
    name: str
    operation: str
    description: str
    category: str
    tags: tuple[str, ...]
    definition: WorkflowDefinition


@dataclass(frozen=True)
class OperationSpec:
    workflow: str | None = None  # the single-workflow form: `class` is ignored
    tagged: tuple[tuple[str, tuple[str, ...]], ...] = ()  # `workflows: [{name, tags}]`
    default: str | None = None


@dataclass(frozen=True)
class Provider:
    name: str
    version: str
    category: str
    description: str
    path: Path
    workflows: dict[str, WorkflowRef]
    operations: dict[str, dict[str, OperationSpec]]  # canonical type → operation → spec
    aliases: dict[str, str] = field(default_factory=dict)  # alias → canonical type
    capability_order: tuple[str, ...] = ()

    @property
    def capabilities(self) -> list[str]:
        """Every type the provider claims, aliases included, in manifest order."""
        return list(self.capability_order)


@dataclass(frozen=True)
class Resolution:
    provider: Provider
    resource_type: str  # canonical
    workflow: WorkflowRef


class Catalog:
    def __init__(self, providers: list[Provider], platform: AdminConfig | None = None) -> None:
        self.platform = platform or AdminConfig.default()
        self.providers: dict[str, Provider] = {}
        self._types: dict[str, tuple[Provider, str]] = {}
        for provider in providers:
            self.providers[provider.name] = provider
            for rtype in provider.operations:
                self._claim(rtype, provider, rtype)
            for alias, canonical in provider.aliases.items():
                self._claim(alias, provider, canonical)

    def _claim(self, rtype: str, provider: Provider, canonical: str) -> None:
        owner = self._types.get(rtype)
        if owner is not None and owner[0].name != provider.name:
            raise CatalogError(
                f"{provider.path / 'provider.yaml'}.capabilities: provider '{provider.name}' claims resource "
                f"type '{rtype}', which is already claimed by provider '{owner[0].name}' "
                f"({owner[0].path / 'provider.yaml'})"
            )
        self._types[rtype] = (provider, canonical)

    def known_types(self) -> list[str]:
        return sorted(self._types)

    def provider_for(self, rtype: str) -> tuple[Provider, str] | None:
        return self._types.get(rtype)

    def resolve(self, rtype: str, operation: str, resource_class: str | None = None) -> Resolution:
        found = self._types.get(rtype)
        if found is None:
            raise ResolveError(
                f"unknown resource type '{rtype}'; known types: {', '.join(self.known_types())}"
            )
        provider, canonical = found
        spec = provider.operations[canonical].get(operation)
        if spec is None:
            raise ResolveError(
                f"provider '{provider.name}' has no {operation} workflow for resource type '{rtype}'"
            )
        if spec.workflow is not None:
            name = spec.workflow
        elif resource_class is not None:
            matches = [n for n, tags in spec.tagged if resource_class in tags]
            if not matches:
                offered = sorted({t for _, tags in spec.tagged for t in tags})
                raise ResolveError(
                    f"unknown class '{resource_class}' for resource type '{rtype}' of provider "
                    f"'{provider.name}'; classes offered: {', '.join(offered) or 'none'}"
                )
            name = matches[0]
        elif spec.default is not None:
            name = spec.default
        else:
            name = spec.tagged[0][0]
        return Resolution(provider, canonical, provider.workflows[name])

    def classes(self, rtype: str, operation: str = Operation.CREATE) -> list[str] | None:
        """The classes a type offers, or None when `class` is ignored for it."""
        found = self._types.get(rtype)
        if found is None:
            return None
        spec = found[0].operations[found[1]].get(operation)
        if spec is None or spec.workflow is not None:
            return None
        return sorted({t for _, tags in spec.tagged for t in tags})


# ----------------------------------------------------------------------------------------------- loading


def load_catalog(providers_dir: Path | None, config_file: Path | None) -> Catalog:
    """Providers from `<providers_dir>/*/provider.yaml` plus the config file's `providers:` list."""
    try:
        platform = load_admin_config(config_file)
    except DefinitionError as exc:
        raise CatalogError(str(exc)) from None
    dirs: list[Path] = []
    if providers_dir is not None:
        if not providers_dir.is_dir():
            raise CatalogError(f"{providers_dir}: providers directory not found")
        dirs.extend(sorted(p.parent for p in providers_dir.glob("*/provider.yaml")))
    dirs.extend(platform.provider_dirs)
    seen: set[Path] = set()
    providers: list[Provider] = []
    for directory in dirs:
        resolved = directory.resolve()
        if resolved in seen:
            continue  # the same provider found twice is loaded once
        seen.add(resolved)
        provider = load_provider(directory, platform)
        clash = next((p for p in providers if p.name == provider.name), None)
        if clash is not None:
            raise CatalogError(
                f"{directory / 'provider.yaml'}: metadata.name: provider '{provider.name}' is also "
                f"loaded from {clash.path / 'provider.yaml'}"
            )
        providers.append(provider)
    catalog = Catalog(providers, platform)
    log.info("loaded %d provider(s): %s", len(providers), ", ".join(p.name for p in providers) or "none")
    return catalog


def load_provider(directory: Path, platform: AdminConfig | None = None) -> Provider:
    """One provider folder; every problem (its manifest or a workflow file) raises CatalogError."""
    try:
        return _load_provider(directory, platform or AdminConfig.default())
    except CatalogError:
        raise
    except DefinitionError as exc:  # the server's start-up catches CatalogError: keep the message whole
        raise CatalogError(str(exc)) from exc


def _load_provider(directory: Path, platform: AdminConfig) -> Provider:
    manifest = directory / "provider.yaml"
    display = str(manifest)
    doc = read_yaml_file(manifest, display, "not found")
    # `compatibility` (upstream's core-version range) is not checked here: it is an unknown key, warned about.
    top = _Fields(doc, display, {"apiVersion", "kind", "metadata", "capabilities", "workflows"})
    top.get("apiVersion", str)
    kind = top.get("kind", str)
    if kind is not None and kind != "Provider":
        raise CatalogError(f"{display}.kind: must be 'Provider', got {kind!r}")
    meta = _Fields(
        top.get("metadata", dict, required=True),
        f"{display}.metadata",
        {"name", "version", "category", "description", "labels", "annotations"},
    )
    name = meta.get("name", str, required=True)
    version = meta.get("version", str, required=True)
    category = meta.get("category", str, default="")
    description = meta.get("description", str, default="")

    workflows: dict[str, WorkflowRef] = {}
    for i, raw in enumerate(top.get("workflows", list, default=[])):
        where = f"{display}.workflows[{i}]"
        wf = _Fields(raw, where, {"name", "file", "description", "category", "operation", "tags", "version"})
        wname = wf.get("name", str, required=True)
        if wname in workflows:
            raise CatalogError(f"{where}.name: workflow '{wname}' is declared twice")
        operation = wf.get("operation", str, default=Operation.CREATE.value)
        if operation not in OPERATIONS:
            raise CatalogError(
                f"{where}.operation: must be one of {', '.join(OPERATIONS)}, got {operation!r}"
            )
        tags = wf.get("tags", list, default=[])
        if not all(isinstance(t, str) for t in tags):
            raise CatalogError(f"{where}.tags: must be a list of strings")
        file = wf.get("file", str, required=True)
        path = (directory / file).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise CatalogError(f"{where}.file: {file!r} points outside the provider directory")
        if not path.is_file():
            raise CatalogError(f"{where}.file: workflow file not found: {directory / file}")
        definition = load_workflow(
            path, display=f"{directory / file}", step_types=STEP_TYPES, platform=platform
        )
        workflows[wname] = WorkflowRef(
            name=wname,
            operation=operation,
            description=wf.get("description", str, default=definition.description),
            category=wf.get("category", str, default=""),
            tags=tuple(tags),
            definition=definition,
        )

    operations, aliases, order = _capabilities(
        top.get("capabilities", dict, default={}), f"{display}.capabilities", workflows
    )
    return Provider(
        name=name,
        version=version,
        category=category,
        description=description,
        path=directory,
        workflows=workflows,
        operations=operations,
        aliases=aliases,
        capability_order=order,
    )


def _capabilities(
    raw: dict[str, Any], where: str, workflows: dict[str, WorkflowRef]
) -> tuple[dict[str, dict[str, OperationSpec]], dict[str, str], tuple[str, ...]]:
    caps = _Fields(raw, where, {"resourceTypes", "resourceTypeCapabilities"})
    order: list[str] = []  # manifest order, aliases in place, as clients list capabilities
    operations: dict[str, dict[str, OperationSpec]] = {}
    aliases: dict[str, str] = {}
    alias_fields: dict[str, str] = {}

    def check_workflow(name: str, operation: str, at: str) -> None:
        ref = workflows.get(name)
        if ref is None:
            known = ", ".join(sorted(workflows)) or "none"
            raise CatalogError(f"{at}: workflow '{name}' is not declared under workflows (declared: {known})")
        if ref.operation != operation:
            raise CatalogError(
                f"{at}: workflow '{name}' is declared with operation '{ref.operation}', not '{operation}'"
            )

    for i, entry in enumerate(caps.get("resourceTypeCapabilities", list, default=[])):
        at = f"{where}.resourceTypeCapabilities[{i}]"
        f = _Fields(entry, at, {"type", "aliasFor", "operations", "description"})
        rtype = f.get("type", str, required=True)
        if rtype in operations or rtype in aliases:
            raise CatalogError(f"{at}.type: '{rtype}' is listed twice")
        alias_for = f.get("aliasFor", str)
        if alias_for is not None:
            if f.get("operations", dict) is not None:
                raise CatalogError(
                    f"{at}: give either 'aliasFor' or 'operations', not both (an alias uses the "
                    f"operations of '{alias_for}')"
                )
            aliases[rtype] = alias_for
            alias_fields[rtype] = f"{at}.aliasFor"
            order.append(rtype)
            continue
        ops: dict[str, OperationSpec] = {}
        for op, spec_raw in (f.get("operations", dict, required=True) or {}).items():
            op_at = f"{at}.operations.{op}"
            if op not in OPERATIONS:
                raise CatalogError(f"{op_at}: unknown operation (use {', '.join(OPERATIONS)})")
            spec = _Fields(spec_raw, op_at, {"workflow", "workflows", "default"})
            single = spec.get("workflow", str)
            tagged_raw = spec.get("workflows", list, default=[])
            default = spec.get("default", str)
            if single is None and not tagged_raw:
                raise CatalogError(f"{op_at}: needs 'workflow' or 'workflows'")
            if single is not None and tagged_raw:
                raise CatalogError(f"{op_at}: give either 'workflow' or 'workflows', not both")
            tagged: list[tuple[str, tuple[str, ...]]] = []
            for j, item in enumerate(tagged_raw):
                item_at = f"{op_at}.workflows[{j}]"
                t = _Fields(item, item_at, {"name", "tags"})
                wname = t.get("name", str, required=True)
                check_workflow(wname, op, f"{item_at}.name")
                tags = t.get("tags", list, default=[])
                if not all(isinstance(x, str) for x in tags):
                    raise CatalogError(f"{item_at}.tags: must be a list of strings")
                tagged.append((wname, tuple(tags)))
            if single is not None:
                check_workflow(single, op, f"{op_at}.workflow")
            if default is not None and default not in [n for n, _ in tagged]:
                raise CatalogError(f"{op_at}.default: '{default}' is not one of the listed workflows")
            ops[op] = OperationSpec(workflow=single, tagged=tuple(tagged), default=default)
        if Operation.CREATE.value not in ops:
            raise CatalogError(f"{at}.operations.create: is required")
        operations[rtype] = ops
        order.append(rtype)

    legacy = caps.get("resourceTypes", list, default=[])
    for i, rtype in enumerate(legacy):
        at = f"{where}.resourceTypes[{i}]"
        if not isinstance(rtype, str):
            raise CatalogError(f"{at}: must be a string, got {_kind(rtype)}")
        if rtype in operations or rtype in aliases:
            continue  # the operation-based entry for the same type wins
        operations[rtype] = {
            Operation.CREATE.value: OperationSpec(workflow=_legacy_create(rtype, workflows, at))
        }
        order.append(rtype)

    # Checked after the legacy list, so an alias may point at a type listed there.
    for alias, target in aliases.items():
        if target not in operations:
            served = ", ".join(operations) or "none"
            raise CatalogError(
                f"{alias_fields[alias]}: '{alias}' is an alias for '{target}', which is not a resource type "
                f"this provider serves with operations (types: {served})"
            )
    return operations, aliases, tuple(order)


def _legacy_create(rtype: str, workflows: dict[str, WorkflowRef], at: str) -> str:
    creates = [w.name for w in workflows.values() if w.operation == Operation.CREATE.value]
    if f"provision-{rtype}" in creates:
        return f"provision-{rtype}"
    if len(creates) == 1:
        return creates[0]
    if not creates:
        raise CatalogError(f"{at}: type '{rtype}' is listed but the provider declares no create workflow")
    raise CatalogError(
        f"{at}: type '{rtype}' matches no 'provision-{rtype}' workflow and the provider has several create "
        f"workflows ({', '.join(creates)}); list it under resourceTypeCapabilities instead"
    )
