"""Query cost: nested lists (`requiredBy { dependsOn { requiredBy ... } }`) multiply, so depth alone does
not bound what a query makes. Two limits, one before and one while running:

- an estimate, as a validation rule: every object field counts the objects it may make, the product of
  the list sizes above it. A list's size is its `first` argument when it has one (a variable counts as
  the largest page), a page for the top-level lists, a few for nested ones. Over the limit, the query
  is refused before it runs, saying how much it asked for.
- a budget while executing (api/execution.py): a query that passed the estimate but meets lists far
  longer than estimated stops once it has made that many objects.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
)

MAX_ESTIMATE = 50_000  # objects a query may ask for
MAX_OBJECTS = 200_000  # objects a query may make while running
TOP_LIST = 100  # the default page of a top-level list
NESTED_LIST = 10  # a nested list without `first` (dependencies, steps, ...)
LARGEST_PAGE = 1000


class QueryCost(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        root = self.context.schema.get_root_type(node.operation)
        if root is None:
            return
        cost = _cost(self.context, root, node.selection_set, 1, top=True, seen=frozenset())
        if cost > MAX_ESTIMATE:
            self.report_error(
                GraphQLError(
                    f"query is too expensive: it may make about {cost:,} objects (at most {MAX_ESTIMATE:,}); "
                    "select fewer nested lists or pass a smaller `first`",
                    node,
                    extensions={"code": "QUERY_TOO_EXPENSIVE"},
                )
            )


def _cost(
    context: Any,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
    multiplier: int,
    *,
    top: bool,
    seen: frozenset[str],
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            field = parent.fields.get(selection.name.value)
            if field is None:
                continue  # __typename, or unknown (another rule reports that)
            inner, is_list = _unwrap(field.type)
            if not isinstance(inner, GraphQLObjectType):
                continue
            size = multiplier * (_list_size(selection, top) if is_list else 1)
            total += size + _cost(context, inner, selection.selection_set, size, top=False, seen=seen)
        elif isinstance(selection, InlineFragmentNode):
            on = (
                context.schema.get_type(selection.type_condition.name.value)
                if selection.type_condition
                else parent
            )
            if isinstance(on, GraphQLObjectType):
                total += _cost(context, on, selection.selection_set, multiplier, top=top, seen=seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = context.get_fragment(name)
            if fragment is None or name in seen:
                continue  # unknown or cyclic: other rules refuse those
            on = context.schema.get_type(fragment.type_condition.name.value)
            if isinstance(on, GraphQLObjectType):
                total += _cost(context, on, fragment.selection_set, multiplier, top=top, seen=seen | {name})
        if total > MAX_ESTIMATE * 1000:
            return total  # far over already: no need to walk the rest
    return total


def _unwrap(type_: Any) -> tuple[Any, bool]:
    is_list = False
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        is_list = is_list or isinstance(type_, GraphQLList)
        type_ = type_.of_type
    return type_, is_list


def _list_size(node: FieldNode, top: bool) -> int:
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        if isinstance(argument.value, IntValueNode):
            return max(int(argument.value.value), 1)
        if isinstance(argument.value, VariableNode):
            return LARGEST_PAGE
    return TOP_LIST if top else NESTED_LIST
