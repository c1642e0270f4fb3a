"""One execution per event for all the subscribers that ask the same thing.

A published event reaches every subscriber as one shared object (`ResourceStateEvent.of`). What a
selection makes of it does not depend on who asks: visibility decided which events a subscriber gets,
not what an event contains. So the first subscriber with a given operation and variables executes it,
and the others reuse that result (its data is only read: serialised per subscriber).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from graphql import OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class SharedEventResults(StrawberryGraphQLCoreExecutionContext):
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


def _share(outcome: Any) -> Any:
    # Shielded: one subscriber going away must not cancel the execution the others wait for.
    return asyncio.shield(outcome) if isinstance(outcome, asyncio.Future) else outcome
