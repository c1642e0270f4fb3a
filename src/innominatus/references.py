"""What a spec's placeholders point at: dependencies between resources, and their resolution against
live data (resource ids and outputs, the spec's metadata)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from innominatus.placeholders import Reference, find_references, substitute, substitute_spec
from innominatus.score import normalise_containers


class MissingOutput(LookupError):
    """A placeholder names an output the provider never produced."""


def dependencies(params: Any) -> set[str]:
    """Names of the resources a resource's params reference."""
    return {ref.parts[0] for ref in find_references(params) if ref.root == "resources"}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    for node in sorted(graph):
        if node not in state:
            found = _visit(graph, node, state, path)
            if found:
                return found
    return None


def _visit(
    graph: Mapping[str, Iterable[str]], node: str, state: dict[str, int], path: list[str]
) -> list[str] | None:
    # A function of its own, not a closure: a recursive closure is a reference cycle, one per spec
    # checked, left to the cycle collector.
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
        if state.get(nxt) == 1:
            return [*path[path.index(nxt) :], nxt]
        if nxt not in state and nxt in graph:
            found = _visit(graph, nxt, state, path)
            if found:
                return found
    path.pop()
    state[node] = 2
    return None


@dataclass(frozen=True)
class LiveResource:
    id: str
    state: str
    outputs: Mapping[str, Any]


def resolver(
    metadata: Mapping[str, Any], resources: Mapping[str, LiveResource]
) -> Callable[[Reference], Any]:
    def resolve(ref: Reference) -> Any:
        if ref.root == "metadata":
            node: Any = metadata
            for part in ref.parts:
                node = _step(node, part, ref, "metadata")
            return node
        name, *rest = ref.parts
        resource = resources.get(name)
        if resource is None:
            raise MissingOutput(f"{ref.text}: resource '{name}' does not exist")
        if not rest:
            return resource.id
        node = resource.outputs
        for part in rest:
            node = _step(node, part, ref, f"resource '{name}'")
        return node

    return resolve


def _step(node: Any, part: str, ref: Reference, owner: str) -> Any:
    if isinstance(node, Mapping) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    if owner == "metadata":
        raise MissingOutput(f"{ref.text}: metadata has no key '{part}'")
    raise MissingOutput(f"{ref.text}: {owner} has no output '{part}'")


def resolve_params(params: Any, metadata: Mapping[str, Any], resources: Mapping[str, LiveResource]) -> Any:
    """Params with every placeholder resolved; MissingOutput names the first key that is not there."""
    return substitute(params, resolver(metadata, resources))


@dataclass
class Workload:
    containers: dict[str, Any] | None  # None until every resource is ACTIVE
    pending: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def workload(document: Mapping[str, Any], resources: Mapping[str, LiveResource]) -> Workload:
    """The containers with every placeholder resolved, once all resources are ACTIVE.

    A key a provider never output is listed in `errors` and left as written; the rest still resolves.
    """
    declared = (document.get("resources") or {}).keys()
    pending = sorted(n for n in declared if n not in resources or resources[n].state != "ACTIVE")
    if pending:
        return Workload(None, pending)
    errors: list[str] = []
    resolve = resolver(document.get("metadata") or {}, resources)

    def lenient(ref: Reference) -> Any:
        try:
            return resolve(ref)
        except MissingOutput as exc:
            errors.append(str(exc))
            return ref.text

    expanded = substitute_spec(
        {"containers": normalise_containers(document.get("containers") or {})}, lenient
    )
    return Workload(expanded["containers"], [], sorted(set(errors)))
