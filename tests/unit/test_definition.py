"""Workflow files: parsing and validation at load, with errors that name the file and the field."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from innominatus.workflows.definition import (
    DEFAULT_STEP_TIMEOUT,
    PARAMETER_TYPES,
    DefinitionError,
    WorkflowDefinition,
    load_workflow,
    parse_duration,
)
from innominatus.workflows.steps import STEP_TYPES
from tests.conftest import workflow_yaml

STEP = """\
- name: only
  type: policy
  config:
    script: echo hi
"""


def load(tmp_path: Path, text: str, name: str = "wf.yaml") -> WorkflowDefinition:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_workflow(path, display=str(path), step_types=STEP_TYPES)


def fails(tmp_path: Path, text: str, *fragments: str) -> str:
    with pytest.raises(DefinitionError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert str(tmp_path / "wf.yaml") in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- a valid file ------------------------------------------------------------------------------------


def test_full_workflow_loads(tmp_path: Path) -> None:
    wf = load(
        tmp_path,
        workflow_yaml(
            "full",
            """\
            - name: first
              type: policy
              timeout: 30s
              config:
                script: echo {{ parameters.db }}
            - name: second-step
              type: policy
              config:
                script: echo {{ .steps.first.output.x }}
            """,
            parameters="""\
            - name: db
              type: string
              required: true
              description: the name
            - name: replicas
              type: integer
              default: 2
            - name: ratio
              type: number
              default: 1
            - name: ha
              type: boolean
              default: false
            - name: tags
              type: array
              default: [a, b]
            - name: labels
              type: object
              default: {team: x}
            - name: untyped
            """,
            outputs="""\
            plain: "{{ parameters.db }}"
            number: 5432
            secret:
              value: "{{ .steps.first.output.password }}"
              sensitive: true
            """,
        ),
    )
    assert wf.name == "full"
    assert [s.name for s in wf.steps] == ["first", "second-step"]
    assert wf.steps[0].timeout == 30.0
    assert wf.steps[1].timeout == DEFAULT_STEP_TIMEOUT
    assert set(wf.steps[0].templates) == {"script"}
    params = {p.name: p for p in wf.parameters}
    assert params["db"].required and not params["db"].has_default
    assert params["replicas"].default == 2 and params["replicas"].has_default
    assert params["ha"].default is False and params["ha"].has_default
    assert params["untyped"].type == "string"
    assert params["labels"].default == {"team": "x"}
    outputs = {o.name: o for o in wf.outputs}
    assert outputs["secret"].sensitive and not outputs["plain"].sensitive
    assert outputs["number"].template.render({}) == "5432"


def test_kind_and_api_version_are_optional(tmp_path: Path) -> None:
    wf = load(tmp_path, "metadata: {name: bare}\nsteps:\n" + textwrap.indent(STEP, "  "))
    assert wf.name == "bare" and wf.parameters == () and wf.outputs == ()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("45", 45.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0)],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "f.timeout") == seconds


@pytest.mark.parametrize("value", [0, -1, "0s", "soon", "5 days", True, "1d"])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(DefinitionError, match=r"^f\.timeout: must be"):
        parse_duration(value, "f.timeout")


# --- the file itself -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="workflow file not found") as err:
        load_workflow(tmp_path / "nope.yaml", display="prov/workflows/nope.yaml", step_types=STEP_TYPES)
    assert str(err.value).startswith("prov/workflows/nope.yaml:")


def test_unreadable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DefinitionError, match="cannot read"):
        load_workflow(path, display=str(path), step_types=STEP_TYPES)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("metadata: {name: x\nsteps: []\n", "malformed YAML"),
        ("metadata: {name: x}\nmetadata: {name: y}\nsteps: []\n", "duplicate key 'metadata'"),
        ("---\nmetadata: {name: x}\n---\nmetadata: {name: y}\n", "more than one YAML document"),
        ("", "must be a mapping, got null"),
        ("- a\n- b\n", "must be a mapping, got list"),
    ],
)
def test_bad_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    fails(tmp_path, text, fragment)


# --- top level and metadata ------------------------------------------------------------------------------


def test_wrong_kind(tmp_path: Path) -> None:
    fails(tmp_path, "kind: Provider\nmetadata: {name: x}\nsteps:\n" + STEP, ".kind: must be 'Workflow'")


def test_api_version_mistyped(tmp_path: Path) -> None:
    fails(tmp_path, "apiVersion: 1\nmetadata: {name: x}\nsteps:\n" + STEP, ".apiVersion: must be a string")


def test_metadata_missing(tmp_path: Path) -> None:
    fails(tmp_path, "kind: Workflow\nsteps:\n" + STEP, ".metadata: is required")


def test_metadata_name_missing(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {description: d}\nsteps:\n" + STEP, ".metadata.name: is required")


def test_metadata_name_mistyped(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {name: [x]}\nsteps:\n" + STEP, ".metadata.name: must be a string, got list")


def test_metadata_not_a_mapping(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: just-a-name\nsteps:\n" + STEP, ".metadata: must be a mapping, got string")


def test_unknown_keys_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    wf = load(
        tmp_path,
        """\
        apiVersion: innominatus.io/v1alpha1
        kind: Workflow
        spec: {}
        metadata:
          name: x
          owner: someone
        steps:
          - name: a
            type: policy
            retries: 3
            retryDelay: 5s
            when: parameters.enabled
            config:
              script: echo
        """,
    )
    assert wf.steps[0].name == "a"
    assert (wf.steps[0].retries, wf.steps[0].retry_delay) == (3, 5.0)  # known since the lifecycle work
    text = caplog.text
    for key in ("wf.yaml.spec", "wf.yaml.metadata.owner", "steps[0].when"):
        assert f"{key}: unknown key ignored" in text, text
    assert "retries: unknown key" not in text


# --- parameters --------------------------------------------------------------------------------------------


def wf_with_params(params: str) -> str:
    return "metadata: {name: x}\nparameters:\n" + textwrap.indent(params, "  ") + "steps:\n" + STEP


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("- type: string\n", ".parameters[0].name: is required"),
        ("- name: 5\n", ".parameters[0].name: must be a string, got integer"),
        ("- name: a\n  type: strnig\n", ".parameters[0].type: must be one of string, number"),
        ("- name: a\n  type: int\n", "got 'int'"),
        ("- name: a\n  type: 3\n", ".parameters[0].type: must be a string, got integer"),
        ("- name: a\n  required: 'yes'\n", ".parameters[0].required: must be a boolean, got string"),
        ("- name: a\n- name: a\n", ".parameters: 'a' is declared twice"),
        ("- just-a-name\n", ".parameters[0]: must be a mapping, got string"),
        (
            "- name: a\n  type: integer\n  default: two\n",
            ".parameters[0].default: parameter 'a' is of type integer",
        ),
        (
            "- name: a\n  type: number\n  default: true\n",
            "parameter 'a' is of type number, but its default is boolean",
        ),
        (
            "- name: a\n  type: string\n  default: 15\n",
            "parameter 'a' is of type string, but its default is integer",
        ),
        ("- name: a\n  type: boolean\n  default: 'false'\n", "parameter 'a' is of type boolean"),
        ("- name: a\n  type: array\n  default: {k: v}\n", "parameter 'a' is of type array"),
        ("- name: a\n  type: integer\n  default: 2.5\n", "parameter 'a' is of type integer"),
    ],
)
def test_bad_parameters(tmp_path: Path, params: str, fragment: str) -> None:
    fails(tmp_path, wf_with_params(params), fragment)


def test_parameters_not_a_list(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {name: x}\nparameters: {a: 1}\nsteps:\n" + STEP, ".parameters: must be a list")


def test_every_parameter_type_is_accepted(tmp_path: Path) -> None:
    params = "".join(f"- name: p_{t}\n  type: {t}\n" for t in PARAMETER_TYPES)
    wf = load(tmp_path, wf_with_params(params))
    assert [p.type for p in wf.parameters] == list(PARAMETER_TYPES)


def test_integer_default_is_fine_for_number(tmp_path: Path) -> None:
    wf = load(tmp_path, wf_with_params("- name: replicas\n  type: number\n  default: 2\n"))
    assert wf.parameters[0].default == 2


# --- steps -------------------------------------------------------------------------------------------------


def wf_with_steps(steps: str) -> str:
    return "metadata: {name: x}\nsteps:\n" + textwrap.indent(steps, "  ")


def test_unknown_step_type_lists_known_types(tmp_path: Path) -> None:
    message = fails(
        tmp_path,
        wf_with_steps("- name: a\n  type: terraform\n  config: {}\n"),
        ".steps[0].type: unknown step type 'terraform'",
        "known step types: " + ", ".join(sorted(STEP_TYPES)),
    )
    assert "policy" in message


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ("- type: policy\n  config: {script: echo}\n", ".steps[0].name: is required"),
        ("- name: a\n  config: {script: echo}\n", ".steps[0].type: is required"),
        ("- name: 1\n  type: policy\n  config: {script: echo}\n", ".steps[0].name: must be a string"),
        ("- name: a\n  type: [policy]\n", ".steps[0].type: must be a string, got list"),
        ("- name: a\n  type: policy\n", ".steps[0].config.script: is required"),
        ("- name: a\n  type: policy\n  config: {script: 5}\n", ".steps[0].config.script: must be a string"),
        ("- name: a\n  type: policy\n  config: echo\n", ".steps[0].config: must be a mapping, got string"),
        (
            "- name: a\n  type: policy\n  timeout: 0\n  config: {script: echo}\n",
            ".steps[0].timeout: must be positive",
        ),
        (
            "- name: a\n  type: policy\n  timeout: soon\n  config: {script: echo}\n",
            ".steps[0].timeout: must be",
        ),
        (
            "- name: a\n  type: policy\n  timeout: true\n  config: {script: echo}\n",
            ".steps[0].timeout: must be",
        ),
        ("- echo hi\n", ".steps[0]: must be a mapping, got string"),
        (
            "- {name: a, type: policy, config: {script: echo}}\n- {name: a, type: policy, config: {script: echo}}\n",
            ".steps[1].name: 'a' is used by an earlier step",
        ),
        (
            "- name: a\n  type: policy\n  config: {script: 'echo {{ if .parameters.x }}'}\n",
            ".steps[0].config.script:",
        ),
        (
            "- name: a\n  type: policy\n  config: {script: 'echo {{ range .parameters.x }}'}\n",
            "not supported",
        ),
        (
            "- name: a\n  type: policy\n  config: {script: 'echo {{ parameters.x '}\n",
            ".steps[0].config.script:",
        ),
    ],
)
def test_bad_steps(tmp_path: Path, steps: str, fragment: str) -> None:
    fails(tmp_path, wf_with_steps(steps), fragment)


def test_steps_empty(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {name: x}\nsteps: []\n", ".steps: must hold at least one step")


def test_steps_missing(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {name: x}\n", ".steps: is required")


def test_steps_not_a_list(tmp_path: Path) -> None:
    fails(tmp_path, "metadata: {name: x}\nsteps: {a: 1}\n", ".steps: must be a list, got mapping")


def test_template_syntax_error_names_line(tmp_path: Path) -> None:
    fails(
        tmp_path,
        wf_with_steps(
            "- name: a\n  type: policy\n  config:\n    script: |\n      echo ok\n      echo {{ end }}\n"
        ),
        ".steps[0].config.script:",
        "line 2",
    )


# --- outputs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ("outputs: [a, b]\n", ".outputs: must be a mapping, got list"),
        ("outputs:\n  a: [1]\n", ".outputs.a: must be a template string or {value, sensitive}, got list"),
        ("outputs:\n  a: true\n", ".outputs.a: must be a template string"),
        ("outputs:\n  a: {sensitive: true}\n", ".outputs.a.value: is required"),
        ("outputs:\n  a: {value: x, sensitive: 'yes'}\n", ".outputs.a.sensitive: must be a boolean"),
        ("outputs:\n  a: {value: [x]}\n", ".outputs.a.value: must be a string or an integer or a number"),
        ("outputs:\n  a: '{{ if .parameters.x }}'\n", ".outputs.a:"),
    ],
)
def test_bad_outputs(tmp_path: Path, outputs: str, fragment: str) -> None:
    fails(tmp_path, "metadata: {name: x}\nsteps:\n" + STEP + outputs, fragment)


def test_upstream_dashed_step_references_compile(tmp_path: Path) -> None:
    wf = load(
        tmp_path,
        workflow_yaml(
            "dashed",
            "- name: get-credentials\n  type: policy\n  config: {script: echo}\n",
            outputs="""\
            go: "{{ .steps.get-credentials.output.username }}"
            native: "{{ steps.get-credentials.outputs.username }}"
            """,
        ),
    )
    context = {"steps": {"get-credentials": {"outputs": {"username": "app"}}}, "parameters": {}}
    assert {o.name: o.template.render(context) for o in wf.outputs} == {"go": "app", "native": "app"}
