"""The cost estimate of a query, before it runs: nested lists multiply, `first` counts."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from innominatus.api.cost import QueryCost
from innominatus.api.schema import schema


def refusal(query: str) -> str | None:
    errors = validate(schema._schema, parse(query), [QueryCost])
    return errors[0].message if errors else None


@pytest.mark.parametrize(
    "query",
    [
        "{ resources { name dependsOn { name } } }",
        "{ applications { resources { workflowExecution { steps { name } } transitions { toState } } } }",
        "{ resources(first: 1000) { dependsOn { name } } }",
        "query($n: Int) { resources(first: $n) { requiredBy { name } } }",
        "{ resources(first: 5) { requiredBy { dependsOn { requiredBy { name } } } } }",
        "{ providers { name } tokens { id } }",
    ],
)
def test_ordinary_queries_pass(query: str) -> None:
    assert refusal(query) is None


@pytest.mark.parametrize(
    ("query", "about"),
    [
        ("{ resources { requiredBy { dependsOn { requiredBy { name } } } } }", "111,100"),
        ("{ resources(first: 1000) { dependsOn { requiredBy { name } } } }", "111,000"),
        ("query($n: Int) { resources(first: $n) { dependsOn { requiredBy { name } } } }", "111,000"),
        (
            "{ resources { ...R } } fragment R on Resource { requiredBy { ... on Resource { requiredBy "
            "{ requiredBy { name } } } } }",
            "111,100",
        ),
    ],
)
def test_multiplying_lists_are_refused_with_the_estimate(query: str, about: str) -> None:
    message = refusal(query)
    assert message is not None and f"about {about} objects (at most 50,000)" in message
