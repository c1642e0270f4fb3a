import json

import pytest

from innominatus.problems import format_path
from innominatus.score import MAX_SPEC_BYTES, Problem, ScoreResource, SpecError, parse_spec

DEMO = """\
apiVersion: score.dev/v1b1
metadata:
  name: demo-app-mock
containers:
  backend:
    image: nginx:latest
    env:
      DATABASE_URL: ${resources.database.connection_string}
      DB_USER: ${resources.database.username}
      DB_PASSWORD: ${resources.database.password}
      DB_NAME: ${resources.database.database_name}
resources:
  database:
    type: postgres-mock
    properties:
      db_name: demo_db
      size: small
      replicas: 2
"""

HEAD = "apiVersion: score.dev/v1b1\nmetadata:\n  name: app\n"
MINIMAL = HEAD + "containers:\n  main:\n    image: nginx\n"


def problems(text: str | bytes, known_types: list[str] | None = None) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, known_types)
    return info.value.problems


def only(text: str | bytes, known_types: list[str] | None = None) -> Problem:
    (problem,) = problems(text, known_types)
    return problem


def test_demo_fixture_is_valid_and_normalised() -> None:
    spec = parse_spec(DEMO, known_types=["postgres-mock", "s3-bucket"])
    assert spec.name == "demo-app-mock"
    assert spec.metadata == {"name": "demo-app-mock"}
    backend = spec.containers["backend"]
    assert "env" not in backend
    assert backend["variables"]["DATABASE_URL"] == "${resources.database.connection_string}"
    assert len(backend["variables"]) == 4
    assert spec.resources == {
        "database": ScoreResource(
            name="database",
            type="postgres-mock",
            class_=None,
            id=None,
            params={"db_name": "demo_db", "size": "small", "replicas": 2},
            metadata={},
        )
    }
    assert spec.service is None
    # The document stays as written, extensions included.
    assert spec.document["containers"]["backend"]["env"]["DB_NAME"] == "${resources.database.database_name}"
    assert spec.document["resources"]["database"]["properties"]["size"] == "small"


def test_bytes_input_is_accepted() -> None:
    assert parse_spec(DEMO.encode()).name == "demo-app-mock"


def test_full_resource_and_service() -> None:
    text = MINIMAL + (
        "service:\n  ports:\n    www: {port: 80, targetPort: 8080}\n"
        "resources:\n  db:\n    type: postgres\n    class: large\n    id: shared.db\n"
        "    metadata: {annotations: {team: a}}\n    params: {version: '15'}\n"
    )
    spec = parse_spec(text)
    assert spec.service == {"ports": {"www": {"port": 80, "targetPort": 8080}}}
    db = spec.resources["db"]
    assert (db.type, db.class_, db.id) == ("postgres", "large", "shared.db")
    assert db.params == {"version": "15"}
    assert db.metadata == {"annotations": {"team": "a"}}


def test_no_resources_is_fine() -> None:
    assert parse_spec(MINIMAL).resources == {}


def test_env_is_merged_into_variables() -> None:
    text = MINIMAL + "    variables: {A: '1', SAME: x}\n    env: {B: '2', SAME: x}\n"
    assert parse_spec(text).containers["main"]["variables"] == {"A": "1", "B": "2", "SAME": "x"}


def test_env_conflicting_with_variables() -> None:
    text = MINIMAL + "    variables: {A: '1'}\n    env: {A: '2'}\n"
    assert only(text) == Problem("containers.main.env.A", "conflicts with variables.A")


def test_env_has_the_same_rules_as_variables() -> None:
    text = MINIMAL + "    env: {PORT: 8080}\n"
    assert only(text) == Problem("containers.main.env.PORT", "must be a string, got integer")


def test_properties_are_merged_into_params() -> None:
    text = MINIMAL + (
        "resources:\n  db:\n    type: pg\n    params: {a: 1, same: [1]}\n    properties: {b: 2, same: [1]}\n"
    )
    assert parse_spec(text).resources["db"].params == {"a": 1, "b": 2, "same": [1]}


def test_properties_conflicting_with_params() -> None:
    text = MINIMAL + "resources:\n  db:\n    type: pg\n    params: {size: s}\n    properties: {size: l}\n"
    problem = only(text)
    assert problem == Problem("resources.db.properties.size", "conflicts with params.size")


def test_properties_must_be_a_mapping() -> None:
    text = MINIMAL + "resources:\n  db:\n    type: pg\n    properties: [a]\n"
    assert only(text) == Problem("resources.db.properties", "must be a mapping, got list")


def test_other_non_standard_keys_stay_refused() -> None:
    text = MINIMAL + "    ports: [80]\nenvironment: {type: dev}\nworkflows: {}\n"
    assert problems(text) == [
        Problem("containers.main.ports", "is not allowed"),
        Problem("environment", "is not allowed"),
        Problem("workflows", "is not allowed"),
    ]


def test_malformed_yaml_names_the_line() -> None:
    problem = only(MINIMAL + "  oops: [\n")
    assert problem.path == ""
    assert "malformed YAML" in problem.message
    assert problem.message.startswith("line ")


def test_duplicate_key_is_reported_at_its_path() -> None:
    text = MINIMAL + "resources:\n  database:\n    type: pg\n  database:\n    type: redis\n"
    problem = only(text)
    assert problem.path == "resources.database"
    assert problem.message == "line 10, column 3: duplicate key 'database' (first defined on line 8)"


def test_nested_duplicate_key() -> None:
    problem = only(MINIMAL + "    variables:\n      A: '1'\n      A: '2'\n")
    assert problem.path == "containers.main.variables.A"
    assert "duplicate key 'A'" in problem.message


def test_two_documents() -> None:
    problem = only(MINIMAL + "---\n" + MINIMAL)
    assert problem.path == ""
    assert "more than one YAML document" in problem.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping, got list"),
        ("just text\n", "must be a mapping, got string"),
        ("42\n", "must be a mapping, got integer"),
        ("", "must be a mapping, got an empty document"),
        ("# only a comment\n", "must be a mapping, got an empty document"),
        ("null\n", "must be a mapping, got an empty document"),
    ],
)
def test_document_must_be_a_mapping(text: str, message: str) -> None:
    assert only(text) == Problem("", message)


def test_too_large() -> None:
    text = MINIMAL + "# " + "x" * MAX_SPEC_BYTES + "\n"
    problem = only(text)
    assert problem.path == ""
    assert problem.message == f"is larger than 1 MiB ({len(text.encode())} bytes)"


def test_exactly_the_limit_is_parsed() -> None:
    text = MINIMAL + "#" * (MAX_SPEC_BYTES - len(MINIMAL.encode()))
    assert len(text.encode()) == MAX_SPEC_BYTES
    assert parse_spec(text).name == "app"


def test_size_counts_bytes_not_characters() -> None:
    text = MINIMAL + "# " + "é" * (MAX_SPEC_BYTES // 2) + "\n"
    assert "is larger than 1 MiB" in only(text).message


def test_not_utf8() -> None:
    problem = only(MINIMAL.encode() + b"    variables: {A: '\xff\xfe'}\n")
    assert problem.path == ""
    assert problem.message.startswith("is not valid UTF-8 (byte 0xff at offset")


def test_latin1_bytes_are_not_utf8() -> None:
    assert "UTF-8" in only("metadata:\n  name: café\n".encode("latin-1")).message


def test_wrong_api_version() -> None:
    text = MINIMAL.replace("score.dev/v1b1", "score.sh/v1b1")
    assert only(text) == Problem("apiVersion", "must be 'score.dev/v1b1', got 'score.sh/v1b1'")


def test_api_version_must_be_a_string() -> None:
    text = MINIMAL.replace("score.dev/v1b1", "1")
    assert only(text) == Problem("apiVersion", "must be a string, got integer")


def test_missing_top_level_fields() -> None:
    assert problems("metadata: {name: app}\n") == [
        Problem("apiVersion", "is required"),
        Problem("containers", "is required"),
    ]


def test_missing_metadata_name() -> None:
    text = "apiVersion: score.dev/v1b1\nmetadata:\n  team: x\ncontainers:\n  main:\n    image: a\n"
    assert only(text) == Problem("metadata.name", "is required")


def test_missing_metadata() -> None:
    text = "apiVersion: score.dev/v1b1\ncontainers:\n  main:\n    image: a\n"
    assert only(text) == Problem("metadata", "is required")


def test_missing_containers() -> None:
    assert only(HEAD) == Problem("containers", "is required")


def test_empty_containers() -> None:
    assert only(HEAD + "containers: {}\n") == Problem("containers", "must not be empty")


def test_missing_image() -> None:
    text = HEAD + "containers:\n  web:\n    variables: {A: b}\n"
    assert only(text) == Problem("containers.web.image", "is required")


def test_resource_without_type() -> None:
    text = MINIMAL + "resources:\n  database:\n    params: {a: 1}\n"
    assert only(text) == Problem("resources.database.type", "is required")


def test_resource_that_is_null() -> None:
    problem = only(MINIMAL + "resources:\n  database:\n")
    assert problem == Problem("resources.database", "must be a mapping, got null")


def test_unknown_resource_type_lists_known_types() -> None:
    text = MINIMAL + "resources:\n  cache:\n    type: redis\n  db:\n    type: postgres\n"
    problem = only(text, known_types=["s3-bucket", "postgres", "kafka"])
    assert problem == Problem(
        "resources.cache.type", "unknown resource type 'redis'; known types: kafka, postgres, s3-bucket"
    )


def test_unknown_resource_type_with_no_known_types() -> None:
    text = MINIMAL + "resources:\n  cache:\n    type: redis\n"
    assert only(text, known_types=[]).message == "unknown resource type 'redis'; known types: (none)"


def test_types_are_not_checked_without_known_types() -> None:
    text = MINIMAL + "resources:\n  cache:\n    type: anything-goes\n"
    assert parse_spec(text).resources["cache"].type == "anything-goes"


def test_type_errors_and_names() -> None:
    text = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: My_App\ncontainers:\n  web:\n    image: x\n"
        "    variables: {PORT: 8080}\n    command: echo\n"
        "service:\n  ports:\n    www: {port: 70000, protocol: HTTP}\n"
    )
    assert problems(text) == [
        Problem("containers.web.command", "must be a list, got string"),
        Problem("containers.web.variables.PORT", "must be a string, got integer"),
        Problem(
            "metadata.name",
            "must be lowercase letters, digits and '-', not starting or ending with '-', got 'My_App'",
        ),
        Problem("service.ports.www.port", "must be at most 65535, got 70000"),
        Problem("service.ports.www.protocol", "must be one of 'TCP', 'UDP', got 'HTTP'"),
    ]


def test_invalid_container_name_is_reported_at_the_name() -> None:
    found = problems(HEAD + "containers:\n  Web_1:\n    image: x\n")
    assert [p.path for p in found] == ["containers.Web_1"]
    assert found[0].message.startswith("is not a valid name: ")


def test_service_port_without_port() -> None:
    text = MINIMAL + "service:\n  ports:\n    www:\n      targetPort: 80\n"
    assert only(text) == Problem("service.ports.www.port", "is required")


def test_one_of_picks_the_sub_error_that_went_deepest() -> None:
    text = MINIMAL + "    files:\n      - target: /etc/a\n        content: 3\n"
    assert only(text) == Problem("containers.main.files.0.content", "must be a string, got integer")


def test_one_of_with_wrong_type_names_both_forms() -> None:
    assert only(MINIMAL + "    files: hello\n") == Problem(
        "containers.main.files", "must be a list or a mapping, got string"
    )


def test_file_needs_exactly_one_source_of_content() -> None:
    text = MINIMAL + "    files:\n      /etc/app.conf:\n        content: a\n        source: b\n"
    problem = only(text)
    assert problem.path == "containers.main.files./etc/app\\.conf"  # a '.' in a key is escaped
    assert problem.message == "must set exactly one of 'content', 'binaryContent', 'source'"


def test_target_is_only_allowed_in_the_list_form() -> None:
    text = MINIMAL + "    files:\n      /etc/a:\n        target: /etc/b\n        content: x\n"
    problem = only(text)
    assert problem.path == "containers.main.files./etc/a.target"
    assert problem.message.startswith("is not allowed here")


def test_probe_needs_http_get_or_exec() -> None:
    text = MINIMAL + "    livenessProbe: {}\n"
    problem = only(text)
    assert problem == Problem("containers.main.livenessProbe", "must set at least one of 'httpGet', 'exec'")


def test_non_string_keys() -> None:
    text = MINIMAL + "    variables:\n      8080: x\n"
    assert Problem("containers.main.variables.8080", "key must be a string, got integer") in problems(text)


def test_all_problems_are_collected_and_sorted() -> None:
    text = (
        "apiVersion: score.sh/v1b1\nmetadata: {}\ncontainers:\n  web:\n    command: ['${resources.x.y}']\n"
        "    variables: {A: '${resources.nope.x}'}\nresources:\n  db: {}\n"
    )
    found = problems(text, known_types=["postgres"])
    assert found == sorted(found)
    assert [p.path for p in found] == [
        "apiVersion",
        "containers.web.image",
        "containers.web.variables.A",
        "metadata.name",
        "resources.db.type",
    ]


def test_spec_error_summary() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("metadata: {}\n")
    assert str(info.value) == "invalid Score spec: apiVersion: is required (+2 more)"
    assert len(info.value.problems) == 3


def test_spec_error_summary_for_a_single_root_problem() -> None:
    with pytest.raises(SpecError, match=r"^invalid Score spec: must be a mapping, got list$"):
        parse_spec("- a\n")


def test_problems_are_deduplicated() -> None:
    text = MINIMAL + "    variables: {A: '${resources.x.y} ${resources.x.y}'}\n"
    assert problems(text) == [
        Problem("containers.main.variables.A", "${resources.x.y}: references undeclared resource 'x'")
    ]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("$$${x}", "ambiguous"),
        ("${resources.database.host", "unterminated placeholder"),
        ("${workflow.X}", "unknown placeholder root 'workflow'"),
        ("${resources.storage.endpoint}", "references undeclared resource 'storage'"),
        ("${metadata.nope}", "metadata has no key 'nope'"),
    ],
)
def test_placeholder_problems(value: str, fragment: str) -> None:
    text = MINIMAL + f"    variables:\n      X: '{value}'\nresources:\n  database:\n    type: pg\n"
    problem = only(text)
    assert problem.path == "containers.main.variables.X"
    assert fragment in problem.message


def test_placeholders_that_resolve() -> None:
    text = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: app\n  annotations:\n    my.key: v\n"
        "containers:\n  main:\n    image: nginx\n    variables:\n"
        "      A: ${metadata.name}\n"
        "      B: ${metadata.annotations.my\\.key}\n"
        "      C: $$HOME and $${literal}\n"
        "      D: ${resources.data}\n"
        "    volumes:\n      /data:\n        source: ${resources.data}\n"
        "resources:\n  data:\n    type: volume\n"
    )
    spec = parse_spec(text)
    assert spec.containers["main"]["variables"]["C"] == "$$HOME and $${literal}"  # expansion comes later


def test_placeholders_in_command_args_and_image_are_not_checked() -> None:
    text = HEAD + (
        "containers:\n  main:\n    image: ${build.image}\n"
        "    command: ['sh', '-c', 'echo ${workflow.X} $$${x}']\n"
        "    args: ['${resources.nope.x}', '${unterminated']\n"
        "    files:\n      /raw:\n        content: ${resources.nope.x}\n        noExpand: true\n"
    )
    assert parse_spec(text).containers["main"]["image"] == "${build.image}"


def test_placeholders_in_properties_are_checked() -> None:
    text = MINIMAL + "resources:\n  db:\n    type: pg\n    properties: {owner: '${metadata.owner}'}\n"
    path, message = "resources.db.properties.owner", "${metadata.owner}: metadata has no key 'owner'"
    assert only(text) == Problem(path, message)


def test_normalised_values_are_copies() -> None:
    spec = parse_spec(MINIMAL + "    variables: {A: b}\n")
    spec.containers["main"]["variables"]["A"] = "changed"
    assert spec.document["containers"]["main"]["variables"]["A"] == "b"


def test_billion_laughs_is_a_problem_not_a_hang() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    problem = only("\n".join(lines) + "\n")
    assert "nodes after alias expansion" in problem.message


def test_timestamps_in_metadata_stay_strings() -> None:
    spec = parse_spec(HEAD + "  created: 2024-01-01\ncontainers:\n  main:\n    image: x\n")
    assert spec.metadata["created"] == "2024-01-01"


@pytest.mark.parametrize("name", ["shop\n", "shop\r\n", "sh\top", "shop\u2028", "shop\x00", "\nshop"])
def test_names_match_whole_strings_only(name: str) -> None:
    document = {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": name},
        "containers": {"main": {"image": "nginx"}},
        "resources": {name: {"type": "postgres"}},
    }
    with pytest.raises(SpecError) as refused:
        parse_spec(json.dumps(document))
    paths = {p.path for p in refused.value.problems}
    assert "metadata.name" in paths
    shown = format_path(["resources", name])
    assert shown in paths
    assert not any(c in shown for c in "\n\r\t\x00\u2028")  # escapes, never the characters


def test_format_path_escapes_what_cannot_be_read() -> None:
    assert format_path(["resources", "db\n", "a.b", "x\\y"]) == "resources.db\\n.a\\.b.x\\\\y"
    assert format_path(["k\u2028", 3]) == "k\\u2028.3"


# Each document reaches a part of the schema that `$ref` names; the validator parse_spec uses has the
# references inlined, and must find exactly what the schema as written finds.
_CONTAINER = {"image": "nginx"}
_BY_REFERENCE = [
    {"service": {"ports": {"www": {"port": 80, "targetPort": 8080, "protocol": "TCP"}}}},
    {"service": {"ports": {"www": {"port": "80"}}}},
    {"service": {"ports": {"www": {"targetPort": 8080}}}},
    {"resources": {"db": {"type": "postgres", "class": "large", "params": {"a": 1}}}},
    {"resources": {"db": {"type": 5, "extra": True}}},
    {"resources": {"db": {}}},
    {"containers": {"main": {**_CONTAINER, "files": [{"target": "/etc/a", "content": "x"}]}}},
    {"containers": {"main": {**_CONTAINER, "files": [{"target": "/etc/a", "mode": 7}]}}},
    {"containers": {"main": {**_CONTAINER, "files": {"/etc/a": {"source": "a.txt"}}}}},
    {"containers": {"main": {**_CONTAINER, "files": {"/etc/a": {"target": "/x", "content": "y"}}}}},
    {"containers": {"main": {**_CONTAINER, "volumes": [{"source": "v", "target": "/data"}]}}},
    {"containers": {"main": {**_CONTAINER, "volumes": {"/data": {"source": 3}}}}},
    {"containers": {"main": {**_CONTAINER, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}}},
    {"containers": {"main": {**_CONTAINER, "resources": {"requests": {"cpu": 1, "gpu": "x"}}}}},
    {"containers": {"main": {**_CONTAINER, "livenessProbe": {"httpGet": {"port": 8080, "path": "/"}}}}},
    {"containers": {"main": {**_CONTAINER, "readinessProbe": {"httpGet": {"path": 5}}}}},
    {"containers": {"main": {**_CONTAINER, "livenessProbe": {"exec": {"command": ["true"]}}}}},
    {"containers": {"main": {**_CONTAINER, "readinessProbe": {"exec": {"command": "true"}, "x": 1}}}},
    {"containers": {"main": {"command": ["sh"]}}},
]


def _through_reference(part: dict) -> dict:
    base = {"apiVersion": "score.dev/v1b1", "metadata": {"name": "app"}, "containers": {"main": _CONTAINER}}
    return {**base, **part}


@pytest.mark.parametrize("part", _BY_REFERENCE, ids=lambda part: json.dumps(part)[:60])
def test_the_inlined_schema_finds_what_the_referenced_one_finds(part: dict) -> None:
    from innominatus import score

    document = _through_reference(part)
    written = score._ExactValidator(score._referenced_schema())
    inlined = score._validator()

    def found(validator: object) -> list[tuple[object, ...]]:
        return sorted(
            (tuple(e.absolute_path), e.validator, e.message, tuple(e.relative_schema_path)[-1:])
            for e in validator.iter_errors(document)  # type: ignore[attr-defined]
        )

    assert found(inlined) == found(written)
    assert "$ref" not in json.dumps(inlined.schema)


def test_parts_the_schema_refuses_are_among_the_cases() -> None:
    """The comparison above means little unless some cases fail: most must."""
    from innominatus import score

    failing = 0
    for part in _BY_REFERENCE:
        document = _through_reference(part)
        failing += any(True for _ in score._validator().iter_errors(document))
    assert failing >= 10


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": {"items": {"$ref": "#/$defs/a"}}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
        {"$defs": {"a": {}}, "properties": {"x": {"$ref": "#/$defs/a", "minimum": 1}}},
        {"$defs": {}, "properties": {"x": {"$ref": "https://example.com/other.json"}}},
    ],
    ids=["recursive", "a sibling that validates", "not local"],
)
def test_a_schema_that_cannot_be_inlined_is_refused_at_start(schema: dict) -> None:
    from innominatus import score

    with pytest.raises(ValueError, match="cannot inline"):
        score._inlined(schema)
