import pytest

from innominatus.placeholders import (
    PlaceholderError,
    Reference,
    check_spec,
    find_references,
    parse_string,
    substitute,
    substitute_spec,
)
from innominatus.problems import Problem


def ref(text: str) -> Reference:
    (found,) = find_references(text)
    return found


def test_resource_output_reference() -> None:
    assert ref("${resources.database.connection_string}") == Reference(
        "resources", ("database", "connection_string"), "${resources.database.connection_string}"
    )


def test_resource_id_reference() -> None:
    assert ref("${resources.data}").parts == ("data",)


def test_metadata_reference_with_escaped_dot() -> None:
    found = ref(r"${metadata.annotations.my\.key}")
    assert found.root == "metadata"
    assert found.parts == ("annotations", "my.key")
    assert found.text == r"${metadata.annotations.my\.key}"


def test_references_embedded_in_text() -> None:
    text = "redis://${resources.c.username}:${resources.c.password}@${resources.c.host}"
    assert [r.parts[1] for r in find_references(text)] == ["username", "password", "host"]


def test_find_references_walks_lists_and_dict_values_but_not_keys() -> None:
    value = {"${resources.k.x}": ["${resources.a.x}", {"b": "${metadata.name}"}], "n": 3, "t": True}
    assert [r.text for r in find_references(value)] == ["${resources.a.x}", "${metadata.name}"]


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("$$", "$"),
        ("$${x}", "${x}"),
        ("$$_$${fizzbuzz}", "$_${fizzbuzz}"),
        ("echo $$${}", None),
        ("$HOME $(FRIEND) $", "$HOME $(FRIEND) $"),
        ("$$$$${x}", None),
        ("$$$${x}", "$${x}"),
        ("cost: 5$", "cost: 5$"),
    ],
)
def test_dollar_escapes(text: str, literal: str | None) -> None:
    if literal is None:
        with pytest.raises(PlaceholderError):
            parse_string(text)
    else:
        assert parse_string(text) == [literal]
        assert substitute(text, lambda r: pytest.fail("nothing to resolve")) == literal


def test_triple_dollar_before_placeholder_is_refused() -> None:
    with pytest.raises(PlaceholderError) as info:
        find_references("price: $$${resources.db.price}")
    assert "$$${resources.db.price}" in str(info.value)
    assert "ambiguous" in str(info.value)


def test_unterminated_placeholder() -> None:
    with pytest.raises(PlaceholderError) as info:
        find_references("url: ${resources.db.host")
    assert "unterminated placeholder" in str(info.value)
    assert info.value.placeholder == "${resources.db.host"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("${workflow.X}", "unknown placeholder root 'workflow'"),
        ("${}", "empty placeholder"),
        ("${resources..x}", "empty key"),
        ("${resources.db.}", "empty key"),
        ("${metadata}", "needs a key after 'metadata'"),
        ("${resources}", "needs a resource name after 'resources'"),
        ("${resources.a${b}}", "cannot be nested"),
        ("${metadata.name\\}", "unterminated"),
    ],
)
def test_syntax_errors_name_the_placeholder(text: str, fragment: str) -> None:
    with pytest.raises(PlaceholderError) as info:
        parse_string(text)
    assert fragment in str(info.value)
    assert str(info.value).startswith("${")


def test_placeholder_error_is_a_value_error() -> None:
    assert issubclass(PlaceholderError, ValueError)


def test_substitute_strings_and_json_rendering() -> None:
    outputs = {"host": "db.local", "port": 5432, "tls": True, "cfg": {"a": 1}, "none": None}

    def resolve(r: Reference) -> object:
        return outputs[r.parts[1]]

    value = {
        "url": "postgres://${resources.db.host}:${resources.db.port}",
        "port": "${resources.db.port}",
        "host": "${resources.db.host}",
        "tls": "${resources.db.tls}",
        "cfg": "${resources.db.cfg}",
        "none": "x=${resources.db.none}",
        "list": ["${resources.db.host}", 7],
        "untouched": 42,
    }
    assert substitute(value, resolve) == {
        "url": "postgres://db.local:5432",
        "port": "5432",
        "host": "db.local",
        "tls": "true",
        "cfg": '{"a": 1}',
        "none": "x=null",
        "list": ["db.local", 7],
        "untouched": 42,
    }


def test_substitute_returns_a_copy() -> None:
    original = {"a": ["${metadata.name}"]}
    result = substitute(original, lambda r: "app")
    assert result == {"a": ["app"]}
    assert original == {"a": ["${metadata.name}"]}


def test_substitute_keeps_escapes_literal() -> None:
    assert substitute("$${HOME} ${metadata.name}", lambda r: "app") == "${HOME} app"


def test_substitute_raises_on_bad_syntax() -> None:
    with pytest.raises(PlaceholderError):
        substitute({"a": "${oops"}, lambda r: "x")


def test_substitute_lets_resolver_errors_through() -> None:
    def resolve(r: Reference) -> object:
        raise KeyError(r.text)

    with pytest.raises(KeyError):
        substitute("${resources.db.x}", resolve)


def spec(**extra: object) -> dict:
    document = {
        "apiVersion": "score.dev/v1b1",
        "metadata": {"name": "app", "annotations": {"my.key": "v"}},
        "containers": {"main": {"image": "nginx"}},
        "resources": {"db": {"type": "postgres"}},
    }
    document.update(extra)
    return document


def test_check_spec_accepts_good_references() -> None:
    document = spec()
    document["containers"]["main"]["variables"] = {
        "URL": "${resources.db.url}",
        "ID": "${resources.db}",
        "NAME": "${metadata.name}",
        "ANNOTATION": r"${metadata.annotations.my\.key}",
        "LITERAL": "$${NOT_A_PLACEHOLDER} costs 5$",
    }
    assert check_spec(document) == []


def test_check_spec_reports_each_problem_at_its_string() -> None:
    document = spec()
    document["containers"]["main"]["variables"] = {
        "A": "${workflow.X}",
        "B": "${resources.storage.endpoint}",
        "C": "${metadata.nope}",
        "D": "$$${x}",
        "E": "${resources.db.host",
        "F": "${metadata.annotations.other}",
    }
    problems: dict[str, str] = {}
    for problem in check_spec(document):
        key = problem.path.rsplit(".", 1)[1]
        problems[key] = problems.get(key, "") + problem.message
    assert "unknown placeholder root 'workflow'" in problems["A"]
    assert problems["B"] == "${resources.storage.endpoint}: references undeclared resource 'storage'"
    assert problems["C"] == "${metadata.nope}: metadata has no key 'nope'"
    assert "ambiguous" in problems["D"]
    assert "unterminated" in problems["E"]
    assert problems["F"] == "${metadata.annotations.other}: metadata has no key 'annotations.other'"


def test_check_spec_reports_several_problems_in_one_string() -> None:
    document = spec()
    document["containers"]["main"]["variables"] = {"X": "${workflow.A}-${resources.nope.b}"}
    messages = sorted(p.message for p in check_spec(document))
    assert len(messages) == 2
    assert all(p.path == "containers.main.variables.X" for p in check_spec(document))


def test_check_spec_looks_at_env_files_volumes_and_resource_params() -> None:
    document = spec()
    document["containers"]["main"].update(
        {
            "env": {"E": "${resources.a.x}"},
            "files": {
                "/etc/app.conf": {"content": "${resources.b.x}"},
                "/etc/raw.conf": {"content": "${resources.ignored.x}", "noExpand": True},
                "/etc/bin": {"binaryContent": "${resources.ignored.x}"},
            },
            "volumes": {"/data": {"source": "${resources.c}"}},
        }
    )
    document["resources"]["db"]["params"] = {"nested": {"list": ["${resources.d.x}"]}}
    document["resources"]["db"]["properties"] = {"p": "${resources.e.x}"}
    paths = sorted(p.path for p in check_spec(document))
    assert paths == [
        "containers.main.env.E",
        "containers.main.files./etc/app\\.conf.content",
        "containers.main.volumes./data.source",
        "resources.db.params.nested.list.0",
        "resources.db.properties.p",
    ]


def test_check_spec_looks_at_the_deprecated_list_forms() -> None:
    document = spec()
    document["containers"]["main"].update(
        {
            "files": [{"target": "/a", "content": "${resources.x.y}"}, {"target": "/b", "source": "f"}],
            "volumes": [{"target": "/d", "source": "${resources.z}"}],
        }
    )
    assert [p.path for p in check_spec(document)] == [
        "containers.main.files.0.content",
        "containers.main.volumes.0.source",
    ]


def test_check_spec_ignores_command_args_image_and_other_fields() -> None:
    document = spec(service={"ports": {"web": {"port": 80, "x": "${workflow.y}"}}})
    document["containers"]["main"].update(
        {
            "image": "${build.image}",
            "command": ["sh", "-c", "echo ${workflow.y}"],
            "args": ["${resources.nope.x}", "$$${x}"],
            "livenessProbe": {"httpGet": {"path": "${oops", "port": 80}},
        }
    )
    document["metadata"]["description"] = "${resources.nope.x}"
    assert check_spec(document) == []


def test_check_spec_survives_a_malformed_document() -> None:
    document = {"containers": ["x", {"variables": "y"}], "resources": "nope", "metadata": 3}
    assert check_spec(document) == []
    document = {"containers": {"main": {"variables": {"A": "${metadata.name}", "B": 3}}}, "metadata": 3}
    expected = Problem("containers.main.variables.A", "${metadata.name}: metadata has no key 'name'")
    assert check_spec(document) == [expected]


def test_metadata_lookup_into_lists() -> None:
    document = spec()
    document["metadata"]["owners"] = ["alice", "bob"]
    document["containers"]["main"]["variables"] = {"O": "${metadata.owners.1}", "P": "${metadata.owners.5}"}
    assert [p.path for p in check_spec(document)] == ["containers.main.variables.P"]


def test_substitute_spec_only_touches_expandable_places() -> None:
    document = spec()
    document["containers"]["main"].update(
        {
            "command": ["echo", "${metadata.name}"],
            "variables": {"N": "${metadata.name}"},
            "env": {"M": "$${metadata.name}"},
            "files": {
                "/a": {"content": "hi ${metadata.name}"},
                "/b": {"content": "hi ${metadata.name}", "noExpand": True},
            },
            "volumes": {"/d": {"source": "${resources.db}"}},
        }
    )
    document["resources"]["db"]["params"] = {"owner": "${metadata.name}"}

    def resolve(r: Reference) -> str:
        return "app" if r.root == "metadata" else "db-volume"

    result = substitute_spec(document, resolve)
    main = result["containers"]["main"]
    assert main["command"] == ["echo", "${metadata.name}"]
    assert main["variables"] == {"N": "app"}
    assert main["env"] == {"M": "${metadata.name}"}
    assert main["files"]["/a"]["content"] == "hi app"
    assert main["files"]["/b"]["content"] == "hi ${metadata.name}"
    assert main["volumes"]["/d"]["source"] == "db-volume"
    assert result["resources"]["db"]["params"] == {"owner": "app"}
    assert document["containers"]["main"]["variables"] == {"N": "${metadata.name}"}
