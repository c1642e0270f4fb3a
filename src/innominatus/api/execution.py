"""How operations execute: graphql-core's executor with two shortcuts that change no answer, and the
running half of the cost limit (api/cost.py).

1. One execution per event for all the subscribers that ask the same thing. A published event reaches
   every subscriber as one shared object (`ResourceStateEvent.of`). What a selection makes of it does
   not depend on who asks: visibility decided which events a subscriber gets, not what an event
   contains. So the first subscriber with a given operation and variables executes it, and the others
   reuse that result (its data is only read: serialised per subscriber).
2. Plain leaf fields in one pass. A selection of fields that only read an attribute and return a scalar
   or an enum (`name`, `state`, ...: the bulk of every list) is what the executor spends most of a list
   on, one resolver call, info object and completion per field. When every field of a selection set is
   such a field, they are read and coerced directly; anything unusual (a null where none may be, a value
   the type refuses, an exception) runs the whole selection set again the ordinary way, which produces
   the ordinary answer and error.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Sized
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    OperationType,
    is_leaf_type,
)
from graphql.pyutils import Path, Undefined
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from innominatus.api.cost import MAX_OBJECTS

_TYPENAME = "__typename"

# A field's shortcut, if it has one: (resolver, leaf type, may be null). Keyed by the identity of the
# schema's own field objects (kept in the entry, so an id is never reused while cached): at most one
# entry per field of the schema.
_Plain = tuple[Any, GraphQLLeafType, bool]
_PLAIN: dict[int, tuple[GraphQLField, _Plain | None]] = {}


def _plain(field: GraphQLField) -> _Plain | None:
    found = _PLAIN.get(id(field))
    if found is not None and found[0] is field:
        return found[1]
    plain: _Plain | None = None
    # Strawberry marks the resolver of a field without a resolver function, permission or extension.
    if getattr(field.resolve, "_is_default", False) and "strawberry-definition" in field.extensions:
        nullable = not isinstance(field.type, GraphQLNonNull)
        leaf = field.type if nullable else field.type.of_type
        if is_leaf_type(leaf):
            plain = (field.resolve, leaf, nullable)
    _PLAIN[id(field)] = (field, plain)
    return plain


class _Ordinary(Exception):
    """This selection set needs the ordinary executor."""


class Execution(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # graphql-core's helpers hold bound methods of the executor: a reference cycle, so every
        # operation's executor (with its context and variables, about 50 objects) was freed only by the
        # cycle collector, whose full passes then walked the heap about once a second under load. Weakly
        # held, it goes the moment its operation ends.
        gather = weakref.WeakMethod(self.gather_async_work)
        track = weakref.WeakMethod(self.track_async_work)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=lambda values: gather()(values),  # type: ignore[misc]
            track=lambda values: track()(values),  # type: ignore[misc]
        )

    def execute_operation(self, serially: bool | None = None) -> Any:
        results: dict[Any, tuple[Any, Any]] | None = getattr(self.root_value, "results", None)
        if results is None or self.operation.operation != OperationType.SUBSCRIPTION:
            return super().execute_operation(serially)
        key = (id(self.operation), json.dumps(self.variable_values, sort_keys=True, default=str))
        found = results.get(key)
        if found is not None and found[0] is self.operation:  # the id is only unique while it lives
            return _share(found[1])
        outcome = super().execute_operation(serially)
        if self.is_awaitable(outcome):
            outcome = asyncio.ensure_future(outcome)
        results[key] = (self.operation, outcome)
        return _share(outcome)

    def complete_list_value(
        self,
        return_type: Any,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        # The running half of the cost limit (api/cost.py): lists far longer than estimated stop the
        # query once it has made MAX_OBJECTS items.
        if isinstance(result, Sized):
            self._made = getattr(self, "_made", 0) + len(result)
            if self._made > MAX_OBJECTS:
                raise GraphQLError(
                    f"query made more than {MAX_OBJECTS:,} objects; select fewer nested lists or pass "
                    "a smaller `first`",
                    extensions={"code": "QUERY_TOO_EXPENSIVE"},
                )
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        if not (self.middleware_manager and self.middleware_manager.middlewares):
            try:
                return self._plain_fields(parent_type, source_value, grouped_field_set)
            except _Ordinary:
                pass
        return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

    def _plain_fields(self, parent_type: GraphQLObjectType, source: Any, grouped: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        fields = parent_type.fields
        for response_name, details in grouped.items():
            name = details[0].node.name.value
            if name == _TYPENAME:
                results[response_name] = parent_type.name
                continue
            field = fields.get(name)
            plain = _plain(field) if field is not None else None
            if plain is None:
                raise _Ordinary
            resolve, leaf, nullable = plain
            try:
                value = resolve(source, None)
                coerced = None if value is None else leaf.coerce_output_value(value)
            except Exception:
                raise _Ordinary from None
            if coerced is Undefined or (coerced is None and (value is not None or not nullable)):
                raise _Ordinary
            results[response_name] = coerced
        return results


def selected_columns(info: Any, columns: dict[str, str | None]) -> frozenset[str] | None:
    """The columns the field being resolved reads when it selects nothing but plain fields (`columns`:
    field name → its column), so its resolver may read only those; None when it selects anything else
    (a nested field, a fragment), which may read the whole row."""
    found: set[str] = set()
    for node in info._raw_info.field_nodes:
        if node.selection_set is None:
            continue
        for selection in node.selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.name.value not in columns:
                return None
            column = columns[selection.name.value]
            if column is not None:
                found.add(column)
    return frozenset(found)


def _share(outcome: Any) -> Any:
    # Shielded: one subscriber going away must not cancel the execution the others wait for.
    return asyncio.shield(outcome) if isinstance(outcome, asyncio.Future) else outcome
