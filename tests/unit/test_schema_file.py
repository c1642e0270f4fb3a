"""schema.graphql is what clients read; it must be exactly what the code serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_schema_file_matches_a_fresh_export() -> None:
    fresh = subprocess.run(
        [sys.executable, "-m", "strawberry", "export-schema", "innominatus.api.schema:schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    committed = (REPO / "schema.graphql").read_text()
    assert fresh.strip() == committed.strip(), (
        "schema.graphql is stale: run `strawberry export-schema innominatus.api.schema:schema "
        "--output schema.graphql` and commit it"
    )


def test_contract_names_are_present() -> None:
    text = (REPO / "schema.graphql").read_text()
    for name in (
        "providers: [Provider!]!",
        "provider(name: String!): Provider!",
        "resources(application: String = null, state: ResourceState = null, type: String = null, "
        "first: Int = null, after: ID = null): [Resource!]!",
        "applications(first: Int = null, after: String = null): [Application!]!",
        "resource(id: ID!): Resource!",
        "workflows(application: String = null, status: WorkflowStatus = null, first: Int = null, "
        "after: ID = null): [WorkflowExecution!]!",
        "workflow(id: ID!): WorkflowExecution!",
        "submitSpec(spec: String!): SubmitSpecPayload!",
        "resourceStateChanged(application: String = null, resourceId: ID = null, afterSequence: Int = null)",
        "capabilities: [String!]!",
    ):
        assert name in text, name
    for enum in (
        "REQUESTED",
        "PROVISIONING",
        "ACTIVE",
        "UPDATING",
        "DELETING",
        "DELETED",
        "FAILED",
        "RUNNING",
        "SUCCEEDED",
        "CANCELLED",
        "PENDING",
        "SKIPPED",
    ):
        assert f"  {enum}\n" in text, enum


def test_unexpected_errors_are_masked_expected_ones_are_not() -> None:
    from graphql import GraphQLError

    from innominatus.api.errors import bad_input, not_found
    from innominatus.api.schema import is_unexpected

    crash = GraphQLError("boom", original_error=RuntimeError("INSERT ... password=hunter2"))
    assert is_unexpected(crash)
    assert not is_unexpected(not_found("resource", "x"))
    assert not is_unexpected(bad_input("invalid"))
    assert not is_unexpected(GraphQLError("Cannot query field 'x' on type 'Query'."))


class _CrashingServices:
    """Services whose every use fails the way a bug or a broken database would."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"connection to postgresql://admin:hunter2@db failed ({name})")


class _Context:
    def __init__(self) -> None:
        from innominatus.auth import Principal

        self.principal = self.caller = Principal(team="platform", role="admin", token_id=None)
        self.services = _CrashingServices()
        self.websocket = True


async def test_an_unexpected_error_reaches_the_client_masked_in_answers_and_events() -> None:
    from innominatus.api.schema import schema

    answer = await schema.execute("{ applications { name } }", context_value=_Context())
    assert [e.message for e in answer.errors or []] == ["internal server error"]

    stream = await schema.subscribe(
        "subscription { resourceStateChanged { sequence } }", context_value=_Context()
    )
    first = await anext(stream)
    await stream.aclose()
    assert [e.message for e in first.errors or []] == ["internal server error"]
    assert "hunter2" not in repr(first.errors) + repr(answer.errors)
