"""The runner: parameter binding, steps in order with outputs flowing between them, rendered outputs —
including workflow files written for upstream innominatus (Go templates), loaded unchanged."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import pytest

from innominatus.providers import load_catalog
from innominatus.workflows.definition import Step, WorkflowDefinition, load_workflow
from innominatus.workflows.policy import StepResult
from innominatus.workflows.runner import (
    ParameterError,
    RunContext,
    bind_parameters,
    render_outputs,
    run_steps,
)
from innominatus.workflows.steps import STEP_TYPES
from innominatus.workflows.templates import RenderError
from tests.conftest import workflow_yaml


class Recorder:
    """StepHooks that remember what happened."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []
        self.results: dict[str, StepResult] = {}
        self.lines: list[tuple[int, str, str]] = []

        self.attempts: dict[int, int] = {}
        self.finals: list[tuple[str, int, bool]] = []

    async def attempt_started(self, index: int, step: Step) -> int:
        self.events.append(("started", index, step.name))
        self.attempts[index] = self.attempts.get(index, 0) + 1
        return self.attempts[index]

    async def attempt_finished(
        self, index: int, step: Step, attempt: int, result: StepResult, final: bool
    ) -> None:
        self.finals.append((step.name, attempt, final))
        if final:
            self.events.append(("finished", index, step.name))
            self.results[step.name] = result

    async def log_line(self, index: int, stream: str, line: str) -> None:
        self.lines.append((index, stream, line))


def load(tmp_path: Path, text: str, name: str = "wf.yaml") -> WorkflowDefinition:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_workflow(path, display=str(path), step_types=STEP_TYPES)


def ctx(**parameters: Any) -> RunContext:
    return RunContext(
        parameters=parameters, app={"name": "shop"}, resource={"name": "db", "type": "postgres"}
    )


# --- bind_parameters -------------------------------------------------------------------------------------

PARAMS = workflow_yaml(
    "params",
    "- name: run\n  type: policy\n  config: {script: echo}\n",
    parameters="""\
    - name: db_name
      type: string
      required: true
    - name: size
      type: string
      default: small
    - name: replicas
      type: integer
      default: 2
    - name: ratio
      type: number
    - name: ha
      type: boolean
      default: false
    - name: zones
      type: array
      default: [a]
    - name: labels
      type: object
    - name: note
    """,
)


@pytest.fixture
def params_wf(tmp_path: Path) -> WorkflowDefinition:
    return load(tmp_path, PARAMS)


def test_defaults_applied(params_wf: WorkflowDefinition) -> None:
    bound = bind_parameters(params_wf, {"db_name": "orders"})
    assert bound == {"db_name": "orders", "size": "small", "replicas": 2, "ha": False, "zones": ["a"]}


def test_given_values_win_over_defaults_and_extras_stay(params_wf: WorkflowDefinition) -> None:
    inputs = {
        "db_name": "orders",
        "size": "large",
        "replicas": 5,
        "ha": True,
        "extra": {"x": 1},
        "ratio": 0.5,
    }
    assert bind_parameters(params_wf, inputs) == {**inputs, "zones": ["a"]}


def test_none_counts_as_missing(params_wf: WorkflowDefinition) -> None:
    assert bind_parameters(params_wf, {"db_name": "x", "size": None})["size"] == "small"
    with pytest.raises(ParameterError, match="parameter 'db_name' is required by workflow 'params'"):
        bind_parameters(params_wf, {"db_name": None})


def test_required_enforced(params_wf: WorkflowDefinition) -> None:
    with pytest.raises(ParameterError, match="parameter 'db_name' is required by workflow 'params'"):
        bind_parameters(params_wf, {"size": "small"})


def test_inputs_not_modified_and_defaults_not_shared(params_wf: WorkflowDefinition) -> None:
    inputs = {"db_name": "x"}
    first = bind_parameters(params_wf, inputs)
    assert inputs == {"db_name": "x"}
    first["zones"].append("b")
    assert bind_parameters(params_wf, inputs)["zones"] == ["a"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("replicas", 3),
        ("replicas", -1),
        ("ratio", 1),  # an integer is a number
        ("ratio", 1.5),
        ("ha", True),
        ("ha", False),
        ("zones", []),
        ("labels", {"a": "b"}),
        ("note", ""),
        ("size", "medium"),
    ],
)
def test_types_accepted(params_wf: WorkflowDefinition, name: str, value: Any) -> None:
    assert bind_parameters(params_wf, {"db_name": "x", name: value})[name] == value


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("replicas", "3", "integer, got str '3'"),  # strings are not coerced
        ("replicas", 2.0, "integer, got float 2.0"),
        ("replicas", True, "integer, got bool True"),  # a boolean is not a number
        ("ratio", True, "number, got bool True"),
        ("ratio", "1.5", "number, got str '1.5'"),
        ("ha", "true", "boolean, got str 'true'"),
        ("ha", 1, "boolean, got int 1"),
        ("size", 5, "string, got int 5"),
        ("note", False, "string, got bool False"),
        ("zones", "a,b", "array, got str 'a,b'"),
        ("zones", {"a": 1}, "array, got dict"),
        ("labels", ["a"], "object, got list"),
        ("db_name", ["x"], "string, got list"),
    ],
)
def test_types_rejected(params_wf: WorkflowDefinition, name: str, value: Any, expected: str) -> None:
    inputs = {"db_name": "x", name: value}
    with pytest.raises(ParameterError) as err:
        bind_parameters(params_wf, inputs)
    assert f"parameter '{name}' must be of type {expected}" in str(err.value)


# --- run_steps -------------------------------------------------------------------------------------------

FLOW = workflow_yaml(
    "flow",
    """\
    - name: make-user
      type: policy
      config:
        script: |
          echo "creating {{ parameters.db_name }}"
          echo '{"username": "{{ parameters.db_name }}_app", "port": 5432}'
    - name: grant
      type: policy
      config:
        script: |
          echo "granting to {{ steps['make-user'].outputs.username }} on {{ .steps.make-user.output.port }}"
          echo "grant={{ steps.make-user.outputs.username }}-rw" >> "$INNOMINATUS_OUTPUT"
    - name: report
      type: policy
      config:
        script: |
          echo "{{ resource.name }} of {{ app.name }}: {{ .steps.grant.output.grant }}"
          echo "summary={{ steps.grant.outputs.grant }}@{{ parameters.size }}" >> "$INNOMINATUS_OUTPUT"
    """,
    parameters="- name: db_name\n  required: true\n- name: size\n  default: small\n",
    outputs="""\
    username: "{{ .steps.make-user.output.username }}"
    port: "{{ steps['make-user'].outputs.port }}"
    summary:
      value: "{{ .steps.report.output.summary }}"
      sensitive: true
    """,
)


async def test_steps_run_in_order_and_outputs_flow(tmp_path: Path) -> None:
    wf = load(tmp_path, FLOW)
    run = ctx(**bind_parameters(wf, {"db_name": "orders"}))
    hooks = Recorder()
    outcome = await run_steps(wf, run, hooks)
    assert outcome.succeeded and outcome.error is None and outcome.failed_step is None
    assert hooks.events == [
        ("started", 0, "make-user"),
        ("finished", 0, "make-user"),
        ("started", 1, "grant"),
        ("finished", 1, "grant"),
        ("started", 2, "report"),
        ("finished", 2, "report"),
    ]
    assert run.steps["make-user"] == {"outputs": {"username": "orders_app", "port": 5432}}
    assert run.steps["grant"]["outputs"] == {"grant": "orders_app-rw"}
    assert (1, "stdout", "granting to orders_app on 5432") in hooks.lines
    assert (2, "stdout", "db of shop: orders_app-rw") in hooks.lines
    assert render_outputs(wf, run) == {
        "username": "orders_app",
        "port": "5432",
        "summary": "orders_app-rw@small",
    }


async def test_start_at_skips_earlier_steps(tmp_path: Path) -> None:
    wf = load(tmp_path, FLOW)
    run = ctx(db_name="orders", size="large")
    run.steps["make-user"] = {"outputs": {"username": "kept", "port": 1}}
    hooks = Recorder()
    outcome = await run_steps(wf, run, hooks, start_at=1)
    assert outcome.succeeded
    assert [e for e in hooks.events if e[0] == "started"] == [
        ("started", 1, "grant"),
        ("started", 2, "report"),
    ]
    assert render_outputs(wf, run)["summary"] == "kept-rw@large"


async def test_render_error_fails_that_step(tmp_path: Path) -> None:
    wf = load(
        tmp_path,
        workflow_yaml(
            "broken",
            """\
            - name: fine
              type: policy
              config: {script: echo ok}
            - name: uses-typo
              type: policy
              config:
                script: echo {{ .parameters.db_nam }}
            - name: never
              type: policy
              config: {script: echo never}
            """,
            parameters="- name: db_name\n",
        ),
    )
    hooks = Recorder()
    run = ctx(db_name="orders")
    outcome = await run_steps(wf, run, hooks)
    assert not outcome.succeeded
    assert outcome.failed_step == "uses-typo"
    assert outcome.error is not None
    assert outcome.error.startswith("step 'uses-typo' failed: ")
    assert f"{tmp_path / 'wf.yaml'}.steps[1].config.script" in outcome.error
    assert "parameters.db_nam is undefined" in outcome.error
    assert ("started", 2, "never") not in hooks.events
    assert hooks.results["uses-typo"].succeeded is False
    assert "uses-typo" not in run.steps and "fine" in run.steps


async def test_shell_metacharacters_in_a_parameter_fail_the_step(tmp_path: Path) -> None:
    wf = load(
        tmp_path,
        workflow_yaml(
            "inject", "- name: s\n  type: policy\n  config:\n    script: echo {{ parameters.db_name }}\n"
        ),
    )
    outcome = await run_steps(wf, ctx(db_name="x; rm -rf /"), Recorder())
    assert outcome.failed_step == "s"
    assert outcome.error is not None and "parameter 'db_name' holds shell metacharacters" in outcome.error


async def test_failing_script_stops_the_run(tmp_path: Path) -> None:
    wf = load(
        tmp_path,
        workflow_yaml(
            "fails",
            "- name: boom\n  type: policy\n  config: {script: 'echo bad >&2; exit 3'}\n"
            "- name: after\n  type: policy\n  config: {script: echo after}\n",
        ),
    )
    hooks = Recorder()
    outcome = await run_steps(wf, ctx(), hooks)
    assert outcome.failed_step == "boom"
    assert outcome.error is not None and outcome.error.startswith("step 'boom' failed: exit code 3")
    assert "bad" in outcome.error
    assert all(name != "after" for _, _, name in hooks.events)


def test_render_outputs_missing_step_output(tmp_path: Path) -> None:
    wf = load(tmp_path, FLOW)
    run = ctx(db_name="x")
    run.steps["make-user"] = {"outputs": {}}
    with pytest.raises(RenderError) as err:
        render_outputs(wf, run)
    assert err.value.where == f"{tmp_path / 'wf.yaml'}.outputs.username"


# --- an upstream workflow file, loaded unchanged -------------------------------------------------------------

UPSTREAM_PROVISION_POSTGRES = """\
apiVersion: innominatus.io/v1alpha1
kind: Workflow
metadata:
  name: provision-postgres
  description: Create PostgreSQL database using Zalando operator

parameters:
  - name: db_name
    type: string
    required: true
    description: Database cluster name

  - name: namespace
    type: string
    required: true
    description: Namespace to create database in

  - name: team_id
    type: string
    required: true
    description: Team identifier (used in cluster name)

  - name: size
    type: string
    required: false
    default: "small"
    description: Database size (small/medium/large)

  - name: replicas
    type: number
    required: false
    default: 2
    description: Number of replicas

  - name: version
    type: string
    required: false
    default: "15"
    description: PostgreSQL version

steps:
  - name: create-postgres-cluster
    type: policy
    config:
      script: |
        #!/bin/bash
        set -e
        echo "cluster: {{ .parameters.team_id }}-{{ .parameters.db_name }} in {{ .parameters.namespace }}"
        echo "instances: {{ .parameters.replicas }} version: {{ .parameters.version }}"
        echo "size: {{ if eq .parameters.size "small" }}5Gi{{ else if eq .parameters.size "medium" }}20Gi{{ else }}100Gi{{ end }}"
        echo "cpu: {{ if eq .parameters.size "small" }}100m{{ else if eq .parameters.size "medium" }}500m{{ else }}2000m{{ end }}"

  - name: get-credentials
    type: policy
    config:
      script: |
        #!/bin/bash
        set -e
        DB_USER="{{ .parameters.db_name }}_app"
        DB_PASSWORD="s3cret"
        DB_HOST="{{ .parameters.team_id }}-{{ .parameters.db_name }}.{{ .parameters.namespace }}.svc.cluster.local"
        DB_PORT="5432"
        DB_NAME="{{ .parameters.db_name }}"

        # Output as JSON for next steps
        cat <<EOF
        {
          "username": "$DB_USER",
          "password": "$DB_PASSWORD",
          "host": "$DB_HOST",
          "port": "$DB_PORT",
          "database": "$DB_NAME",
          "connection_string": "postgresql://$DB_USER:$DB_PASSWORD@$DB_HOST:$DB_PORT/$DB_NAME"
        }
        EOF

outputs:
  database_name: "{{ .parameters.db_name }}"
  cluster_name: "{{ .parameters.team_id }}-{{ .parameters.db_name }}"
  namespace: "{{ .parameters.namespace }}"
  host: "{{ .parameters.team_id }}-{{ .parameters.db_name }}.{{ .parameters.namespace }}.svc.cluster.local"
  port: "5432"
  credentials_secret: "{{ .parameters.team_id }}-{{ .parameters.db_name }}.{{ .parameters.db_name }}-app.credentials"
  username: "{{ .steps.get-credentials.output.username }}"
  password: "{{ .steps.get-credentials.output.password }}"
  connection_string: "{{ .steps.get-credentials.output.connection_string }}"
"""

UPSTREAM_PROVIDER = """\
apiVersion: v1
kind: Provider
metadata:
  name: database-team
  version: 1.0.0
  category: data
  description: Database provisioners using PostgreSQL Operator

compatibility:
  minCoreVersion: 1.0.0
  maxCoreVersion: 2.0.0

capabilities:
  resourceTypes:
    - postgres
    - postgresql

workflows:
  - name: provision-postgres
    file: ./workflows/provision-postgres.yaml
    description: Create PostgreSQL database using Zalando operator
    category: provisioner
    version: 1.0.0
    tags: [database, postgres, zalando]
"""


@pytest.fixture
def upstream(tmp_path: Path) -> WorkflowDefinition:
    folder = tmp_path / "providers" / "database-team"
    (folder / "workflows").mkdir(parents=True)
    (folder / "provider.yaml").write_text(UPSTREAM_PROVIDER)
    (folder / "workflows" / "provision-postgres.yaml").write_text(UPSTREAM_PROVISION_POSTGRES)
    catalog = load_catalog(tmp_path / "providers", None)
    resolution = catalog.resolve("postgresql", "create", "whatever")  # legacy: class ignored
    assert resolution.workflow.name == "provision-postgres"
    assert resolution.workflow.tags == ("database", "postgres", "zalando")
    return resolution.workflow.definition


@pytest.mark.parametrize(
    ("size", "volume", "cpu"),
    [("small", "5Gi", "100m"), ("medium", "20Gi", "500m"), ("large", "100Gi", "2000m")],
)
def test_upstream_size_tiers(upstream: WorkflowDefinition, size: str, volume: str, cpu: str) -> None:
    params = bind_parameters(
        upstream, {"db_name": "orders", "namespace": "shop", "team_id": "t1", "size": size}
    )
    script = upstream.steps[0].templates["script"].render(ctx(**params).template_context())
    assert f'echo "size: {volume}"' in script
    assert f'echo "cpu: {cpu}"' in script
    assert 'echo "cluster: t1-orders in shop"' in script
    assert 'echo "instances: 2 version: 15"' in script


def test_upstream_default_size(upstream: WorkflowDefinition) -> None:
    params = bind_parameters(upstream, {"db_name": "orders", "namespace": "shop", "team_id": "t1"})
    assert params["size"] == "small" and params["replicas"] == 2 and params["version"] == "15"
    script = upstream.steps[0].templates["script"].render(ctx(**params).template_context())
    assert 'echo "size: 5Gi"' in script


def test_upstream_required_parameters(upstream: WorkflowDefinition) -> None:
    with pytest.raises(
        ParameterError, match="parameter 'namespace' is required by workflow 'provision-postgres'"
    ):
        bind_parameters(upstream, {"db_name": "orders", "team_id": "t1"})


async def test_upstream_workflow_runs_end_to_end(upstream: WorkflowDefinition) -> None:
    params = bind_parameters(
        upstream, {"db_name": "orders", "namespace": "shop", "team_id": "t1", "size": "medium"}
    )
    run = ctx(**params)
    hooks = Recorder()
    outcome = await run_steps(upstream, run, hooks)
    assert outcome.succeeded, outcome.error
    assert (0, "stdout", "size: 20Gi") in hooks.lines
    assert (0, "stdout", "cpu: 500m") in hooks.lines
    assert run.steps["get-credentials"]["outputs"]["username"] == "orders_app"
    outputs = render_outputs(upstream, run)
    assert outputs == {
        "database_name": "orders",
        "cluster_name": "t1-orders",
        "namespace": "shop",
        "host": "t1-orders.shop.svc.cluster.local",
        "port": "5432",
        "credentials_secret": "t1-orders.orders-app.credentials",
        "username": "orders_app",
        "password": "s3cret",
        "connection_string": "postgresql://orders_app:s3cret@t1-orders.shop.svc.cluster.local:5432/orders",
    }


def test_upstream_outputs_with_given_step_outputs(upstream: WorkflowDefinition) -> None:
    run = ctx(db_name="orders", namespace="shop", team_id="t1")
    run.steps["get-credentials"] = {"outputs": {"username": "u", "password": "p", "connection_string": "c"}}
    outputs = render_outputs(upstream, run)
    assert (outputs["username"], outputs["password"], outputs["connection_string"]) == ("u", "p", "c")


async def test_a_step_is_retried_with_doubling_delays(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    definition = load(
        tmp_path,
        f"""
        metadata: {{name: wf}}
        steps:
          - name: flaky
            type: policy
            retries: 3
            retryDelay: 0.1
            config:
              script: |
                n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; date +%s.%N >> {counter}.times
                [ $n -ge 3 ] || {{ echo "attempt $n fails" >&2; exit 1; }}
                echo '{{"tries": "'$n'"}}'
        """,
    )
    hooks = Recorder()
    outcome = await run_steps(definition, RunContext({}, {}, {}), hooks)
    assert outcome.succeeded
    assert hooks.finals == [("flaky", 1, False), ("flaky", 2, False), ("flaky", 3, True)]
    assert hooks.results["flaky"].outputs == {"tries": "3"}
    times = [float(t) for t in (tmp_path / "count.times").read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 0.1 s, then doubled


async def test_retries_run_out_and_the_last_error_is_reported(tmp_path: Path) -> None:
    definition = load(
        tmp_path,
        """
        metadata: {name: wf}
        steps:
          - name: broken
            type: policy
            retries: 1
            retryDelay: 0.05
            config:
              script: echo nope >&2; exit 4
        """,
    )
    hooks = Recorder()
    outcome = await run_steps(definition, RunContext({}, {}, {}), hooks)
    assert not outcome.succeeded
    assert hooks.finals == [("broken", 1, False), ("broken", 2, True)]
    assert outcome.error == "step 'broken' failed: exit code 4: nope"
