"""The provider catalog: loading manifests and config, every way they can be wrong, and resolve()."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from innominatus.providers import CatalogError, ResolveError, load_catalog, load_provider
from innominatus.workflows.definition import DefinitionError
from tests.conftest import PROVIDERS, ProviderFactory, workflow_yaml


def wf(name: str, script: str = "echo ok") -> str:
    return workflow_yaml(name, f"- name: run\n  type: policy\n  config:\n    script: {script}\n")


def write_provider(root: Path, folder: str, manifest: str, workflows: dict[str, str] | None = None) -> Path:
    """A provider folder `root/folder` with `provider.yaml` and `workflows/<name>.yaml` files."""
    directory = root / folder
    (directory / "workflows").mkdir(parents=True, exist_ok=True)
    for name, body in (workflows or {}).items():
        (directory / "workflows" / f"{name}.yaml").write_text(body)
    (directory / "provider.yaml").write_text(textwrap.dedent(manifest))
    return directory


def manifest(name: str = "team", capabilities: str = "", workflows: str = "", version: str = "1.0.0") -> str:
    text = f"apiVersion: v1\nkind: Provider\nmetadata:\n  name: {name}\n  version: {version}\n"
    if capabilities:
        text += "capabilities:\n" + textwrap.indent(textwrap.dedent(capabilities), "  ")
    if workflows:
        text += "workflows:\n" + textwrap.indent(textwrap.dedent(workflows), "  ")
    return text


def entry(name: str, operation: str = "create", tags: str = "") -> str:
    text = f"- name: {name}\n  file: ./workflows/{name}.yaml\n  operation: {operation}\n"
    return text + (f"  tags: {tags}\n" if tags else "")


def fails(directory: Path, *fragments: str) -> str:
    with pytest.raises(CatalogError) as err:
        load_provider(directory)
    message = str(err.value)
    assert str(directory / "provider.yaml") in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the shipped provider and the fixture ---------------------------------------------------------------


def test_shipped_database_team_loads() -> None:
    catalog = load_catalog(PROVIDERS, None)
    provider = catalog.providers["database-team"]
    assert provider.version == "1.0.0"
    assert provider.capabilities == ["postgres", "postgresql", "postgres-mock"]
    assert catalog.resolve("postgresql", "create").workflow.name == "provision-postgres-direct"
    assert catalog.resolve("postgres", "create", "direct").workflow.name == "provision-postgres-direct"
    assert catalog.resolve("postgres", "delete").workflow.name == "delete-postgres-direct"
    assert catalog.resolve("postgres-mock", "delete").workflow.name == "delete-postgres-mock"
    ref = provider.workflows["provision-postgres-mock"]
    assert ref.category == "provisioner" and "mock" in ref.tags
    assert ref.definition.name == "provision-postgres-mock"


def test_make_provider_fixture(make_provider: ProviderFactory) -> None:
    root = make_provider(
        {"create-db": wf("create-db"), "drop-db": wf("drop-db")},
        types={"test-db": {"create": "create-db", "delete": "drop-db"}},
    )
    catalog = load_catalog(root, None)
    assert catalog.resolve("test-db", "delete").workflow.name == "drop-db"


# --- manifest: metadata and YAML ------------------------------------------------------------------------


def test_metadata_name_missing(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", "apiVersion: v1\nkind: Provider\nmetadata:\n  version: 1.0.0\n")
    fails(d, "provider.yaml.metadata.name: is required")


def test_metadata_missing(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", "apiVersion: v1\nkind: Provider\n")
    fails(d, "provider.yaml.metadata: is required")


def test_version_missing(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", "kind: Provider\nmetadata:\n  name: p\n")
    fails(d, "provider.yaml.metadata.version: is required")


@pytest.mark.parametrize(("version", "kind"), [("1.0", "number"), ("1", "integer"), ("true", "boolean")])
def test_version_mistyped(tmp_path: Path, version: str, kind: str) -> None:
    d = write_provider(tmp_path, "p", manifest("p", version=version))
    fails(d, "provider.yaml.metadata.version: must be a string", f"got {kind}")


def test_quoted_version_is_fine(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", manifest("p", version='"1.0"'))
    assert load_provider(d).version == "1.0"


def test_wrong_kind(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", manifest("p").replace("kind: Provider", "kind: Workflow"))
    fails(d, "provider.yaml.kind: must be 'Provider', got 'Workflow'")


def test_api_version_mistyped(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", manifest("p").replace("apiVersion: v1", "apiVersion: 1"))
    fails(d, "provider.yaml.apiVersion: must be a string")


def test_name_mistyped(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", "metadata:\n  name: [a]\n  version: '1'\n")
    fails(d, "provider.yaml.metadata.name: must be a string, got list")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("metadata: {name: p\n", "malformed YAML"),
        (
            "metadata:\n  name: p\n  version: '1'\n  name: q\n",
            "duplicate key 'name' (first defined on line 2)",
        ),
        (
            "metadata: {name: p, version: '1'}\nmetadata: {name: q, version: '1'}\n",
            "duplicate key 'metadata'",
        ),
        ("", "must be a mapping, got null"),
        ("- p\n", "must be a mapping, got list"),
        ("metadata: {name: p, version: '1'}\ncapabilities: [postgres]\n", ".capabilities: must be a mapping"),
        ("metadata: {name: p, version: '1'}\nworkflows: {a: b}\n", ".workflows: must be a list"),
    ],
)
def test_bad_manifest(tmp_path: Path, text: str, fragment: str) -> None:
    d = write_provider(tmp_path, "p", text)
    fails(d, fragment)


def test_catalog_error_is_a_definition_error() -> None:
    assert issubclass(CatalogError, DefinitionError)


def test_provider_yaml_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match=r"provider\.yaml: not found"):
        load_provider(tmp_path / "empty")


def test_unknown_keys_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    upstream_step = (
        "apiVersion: innominatus.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: provision-thing\n"
        "steps:\n  - name: run\n    type: policy\n    when: always\n    config:\n      script: echo\n"
    )
    d = write_provider(
        tmp_path,
        "p",
        manifest("p", "resourceTypes: [thing]\n", entry("provision-thing"))
        + "compatibility:\n  minCoreVersion: 1.0.0\n  maxCoreVersion: 2.0.0\nmaintainer: someone\n",
        {"provision-thing": upstream_step},
    )
    provider = load_provider(d)
    assert provider.capabilities == ["thing"]
    for key in (
        "provider.yaml.compatibility",
        "provider.yaml.maintainer",
        "provision-thing.yaml.steps[0].when",
    ):
        assert f"{key}: unknown key ignored" in caplog.text, caplog.text


# --- manifest: workflow entries --------------------------------------------------------------------------


def test_workflow_file_missing(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", manifest("p", "resourceTypes: [thing]\n", entry("provision-thing")))
    fails(d, ".workflows[0].file: workflow file not found", "provision-thing.yaml")


def test_workflow_file_is_a_directory(tmp_path: Path) -> None:
    d = write_provider(tmp_path, "p", manifest("p", workflows="- name: a\n  file: ./workflows\n"))
    fails(d, ".workflows[0].file: workflow file not found")


@pytest.mark.parametrize("file", ["../x.yaml", "./workflows/../../x.yaml", "/etc/passwd"])
def test_workflow_file_escaping_the_provider_dir(tmp_path: Path, file: str) -> None:
    (tmp_path / "x.yaml").write_text(wf("x"))
    d = write_provider(tmp_path, "p", manifest("p", workflows=f"- name: x\n  file: {file}\n"))
    fails(d, ".workflows[0].file:", "points outside the provider directory")


def test_symlink_escaping_the_provider_dir(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(wf("x"))
    d = write_provider(tmp_path, "p", manifest("p", workflows="- name: x\n  file: ./workflows/x.yaml\n"))
    (d / "workflows" / "x.yaml").symlink_to(tmp_path / "outside.yaml")
    fails(d, ".workflows[0].file:", "points outside the provider directory")


def test_invalid_workflow_file_names_the_workflow_file(tmp_path: Path) -> None:
    body = workflow_yaml("a", "- name: run\n  type: terraform\n  config: {}\n")
    d = write_provider(tmp_path, "p", manifest("p", "resourceTypes: [thing]\n", entry("a")), {"a": body})
    with pytest.raises(CatalogError) as err:
        load_provider(d)
    assert "workflows/a.yaml.steps[0].type: unknown step type 'terraform'" in str(err.value)
    assert "known step types: kubernetes, policy, postgres" in str(err.value)


def test_unreferenced_workflow_is_still_validated(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path,
        "p",
        manifest("p", "resourceTypes: [thing]\n", entry("provision-thing") + entry("spare")),
        {"provision-thing": wf("provision-thing"), "spare": "metadata: {name: spare}\nsteps: []\n"},
    )
    with pytest.raises(CatalogError, match=r"spare\.yaml\.steps: must hold at least one step"):
        load_provider(d)


@pytest.mark.parametrize(
    ("workflows", "fragment"),
    [
        ("- file: ./workflows/a.yaml\n", ".workflows[0].name: is required"),
        ("- name: a\n", ".workflows[0].file: is required"),
        ("- name: a\n  file: 5\n", ".workflows[0].file: must be a string"),
        (
            "- name: a\n  file: ./workflows/a.yaml\n  operation: patch\n",
            ".workflows[0].operation: must be one of",
        ),
        ("- name: a\n  file: ./workflows/a.yaml\n  tags: database\n", ".workflows[0].tags: must be a list"),
        (
            "- name: a\n  file: ./workflows/a.yaml\n  tags: [1, 2]\n",
            ".workflows[0].tags: must be a list of strings",
        ),
        (entry("a") + entry("a"), ".workflows[1].name: workflow 'a' is declared twice"),
        ("- a\n", ".workflows[0]: must be a mapping, got string"),
    ],
)
def test_bad_workflow_entries(tmp_path: Path, workflows: str, fragment: str) -> None:
    d = write_provider(tmp_path, "p", manifest("p", workflows=workflows), {"a": wf("a")})
    fails(d, fragment)


def test_workflow_entry_defaults(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path, "p", manifest("p", workflows="- name: a\n  file: workflows/a.yaml\n"), {"a": wf("a")}
    )
    ref = load_provider(d).workflows["a"]
    assert ref.operation == "create" and ref.tags == () and ref.category == ""


# --- capabilities -------------------------------------------------------------------------------------------

CAPS = """\
resourceTypeCapabilities:
  - type: postgres
    operations:
      create:
        workflows:
          - name: pg-small
            tags: [small, dev]
          - name: pg-ha
            tags: [ha, production]
        default: pg-small
      update:
        workflow: pg-update
  - type: postgresql
    aliasFor: postgres
  - type: cache
    operations:
      create:
        workflow: cache-create
      delete:
        workflow: cache-delete
"""
CAPS_WORKFLOWS = (
    entry("pg-small")
    + entry("pg-ha")
    + entry("pg-update", "update")
    + entry("cache-create")
    + entry("cache-delete", "delete")
)


@pytest.fixture
def catalog_root(tmp_path: Path) -> Path:
    names = ["pg-small", "pg-ha", "pg-update", "cache-create", "cache-delete"]
    write_provider(
        tmp_path / "providers", "db", manifest("db", CAPS, CAPS_WORKFLOWS), {n: wf(n) for n in names}
    )
    return tmp_path / "providers"


def test_capabilities(catalog_root: Path) -> None:
    catalog = load_catalog(catalog_root, None)
    provider = catalog.providers["db"]
    assert provider.capabilities == ["postgres", "postgresql", "cache"]  # manifest order
    assert provider.aliases == {"postgresql": "postgres"}
    assert catalog.known_types() == ["cache", "postgres", "postgresql"]
    assert catalog.provider_for("postgresql") == (provider, "postgres")
    assert catalog.provider_for("redis") is None


@pytest.mark.parametrize(
    ("rtype", "operation", "cls", "workflow"),
    [
        ("postgres", "create", None, "pg-small"),  # no class → default
        ("postgres", "create", "small", "pg-small"),
        ("postgres", "create", "dev", "pg-small"),
        ("postgres", "create", "production", "pg-ha"),
        ("postgres", "create", "ha", "pg-ha"),
        ("postgresql", "create", "ha", "pg-ha"),  # alias
        ("postgresql", "create", None, "pg-small"),
        ("postgres", "update", None, "pg-update"),
        ("postgres", "update", "anything", "pg-update"),  # single workflow: class ignored
        ("postgresql", "update", "whatever", "pg-update"),
        ("cache", "create", "gold", "cache-create"),
        ("cache", "delete", None, "cache-delete"),
    ],
)
def test_resolve(catalog_root: Path, rtype: str, operation: str, cls: str | None, workflow: str) -> None:
    resolution = load_catalog(catalog_root, None).resolve(rtype, operation, cls)
    assert resolution.workflow.name == workflow
    assert resolution.workflow.operation == operation
    assert resolution.provider.name == "db"
    assert resolution.resource_type == ("cache" if rtype == "cache" else "postgres")


def test_resolve_unknown_class_lists_classes(catalog_root: Path) -> None:
    catalog = load_catalog(catalog_root, None)
    with pytest.raises(ResolveError) as err:
        catalog.resolve("postgres", "create", "gold")
    message = str(err.value)
    assert "unknown class 'gold'" in message and "'postgres'" in message and "'db'" in message
    assert "classes offered: dev, ha, production, small" in message


def test_resolve_unknown_class_through_alias(catalog_root: Path) -> None:
    with pytest.raises(ResolveError, match="unknown class 'gold' for resource type 'postgresql'"):
        load_catalog(catalog_root, None).resolve("postgresql", "create", "gold")


@pytest.mark.parametrize(
    ("rtype", "operation"), [("postgres", "delete"), ("postgresql", "delete"), ("cache", "update")]
)
def test_resolve_missing_operation(catalog_root: Path, rtype: str, operation: str) -> None:
    with pytest.raises(ResolveError) as err:
        load_catalog(catalog_root, None).resolve(rtype, operation)
    assert str(err.value) == f"provider 'db' has no {operation} workflow for resource type '{rtype}'"


def test_resolve_unknown_type(catalog_root: Path) -> None:
    with pytest.raises(
        ResolveError, match="unknown resource type 'redis'; known types: cache, postgres, postgresql"
    ):
        load_catalog(catalog_root, None).resolve("redis", "create")


def test_classes(catalog_root: Path) -> None:
    catalog = load_catalog(catalog_root, None)
    assert catalog.classes("postgres") == ["dev", "ha", "production", "small"]
    assert catalog.classes("postgresql") == ["dev", "ha", "production", "small"]
    assert catalog.classes("postgres", "update") is None  # single workflow: class ignored
    assert catalog.classes("cache") is None
    assert catalog.classes("postgres", "delete") is None
    assert catalog.classes("redis") is None


def test_tagged_without_default_takes_the_first(tmp_path: Path) -> None:
    caps = (
        "resourceTypeCapabilities:\n  - type: t\n    operations:\n      create:\n        workflows:\n"
        "          - {name: b, tags: [x]}\n          - {name: a, tags: [y]}\n"
    )
    d = write_provider(
        tmp_path / "providers",
        "p",
        manifest("p", caps, entry("a") + entry("b")),
        {"a": wf("a"), "b": wf("b")},
    )
    catalog = load_catalog(d.parent, None)
    assert catalog.resolve("t", "create").workflow.name == "b"
    assert catalog.resolve("t", "create", "y").workflow.name == "a"


def test_legacy_resource_types(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path / "providers",
        "p",
        manifest(
            "p",
            "resourceTypes: [postgres, s3]\n",
            entry("provision-postgres") + entry("provision-s3") + entry("delete-postgres", "delete"),
        ),
        {n: wf(n) for n in ("provision-postgres", "provision-s3", "delete-postgres")},
    )
    catalog = load_catalog(d.parent, None)
    assert catalog.resolve("postgres", "create").workflow.name == "provision-postgres"
    assert catalog.resolve("s3", "create", "some-class").workflow.name == "provision-s3"
    with pytest.raises(
        ResolveError, match="provider 'p' has no delete workflow for resource type 'postgres'"
    ):
        catalog.resolve("postgres", "delete")  # legacy lists are create only


def test_legacy_single_create_workflow_serves_every_listed_type(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path, "p", manifest("p", "resourceTypes: [a, b]\n", entry("make")), {"make": wf("make")}
    )
    provider = load_provider(d)
    assert {t: ops["create"].workflow for t, ops in provider.operations.items()} == {"a": "make", "b": "make"}


def test_legacy_ambiguous_create_workflows(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path,
        "p",
        manifest("p", "resourceTypes: [thing]\n", entry("one") + entry("two")),
        {"one": wf("one"), "two": wf("two")},
    )
    fails(d, ".capabilities.resourceTypes[0]: type 'thing' matches no 'provision-thing' workflow", "one, two")


def test_legacy_without_create_workflow(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path, "p", manifest("p", "resourceTypes: [thing]\n", entry("rm", "delete")), {"rm": wf("rm")}
    )
    fails(
        d,
        ".capabilities.resourceTypes[0]: type 'thing' is listed but the provider declares no create workflow",
    )


def test_legacy_entry_not_a_string(tmp_path: Path) -> None:
    d = write_provider(
        tmp_path, "p", manifest("p", "resourceTypes: [{type: x}]\n", entry("a")), {"a": wf("a")}
    )
    fails(d, ".capabilities.resourceTypes[0]: must be a string, got mapping")


def test_both_formats_operation_entry_wins(tmp_path: Path) -> None:
    caps = (
        "resourceTypes: [thing]\nresourceTypeCapabilities:\n  - type: thing\n    operations:\n"
        "      create: {workflow: b}\n"
    )
    d = write_provider(
        tmp_path,
        "p",
        manifest("p", caps, entry("provision-thing") + entry("b")),
        {"provision-thing": wf("provision-thing"), "b": wf("b")},
    )
    assert load_provider(d).operations["thing"]["create"].workflow == "b"


def test_alias_for_a_legacy_type(tmp_path: Path) -> None:
    caps = "resourceTypes: [postgres]\nresourceTypeCapabilities:\n  - type: pg\n    aliasFor: postgres\n"
    d = write_provider(
        tmp_path / "providers",
        "p",
        manifest("p", caps, entry("provision-postgres")),
        {"provision-postgres": wf("provision-postgres")},
    )
    catalog = load_catalog(d.parent, None)
    assert catalog.resolve("pg", "create").workflow.name == "provision-postgres"


CAP_ERRORS = [
    (
        "resourceTypeCapabilities:\n  - type: pg\n    aliasFor: postgres\n",
        ".capabilities.resourceTypeCapabilities[0].aliasFor: 'pg' is an alias for 'postgres', which is not",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}}}\n"
        "  - {type: b, aliasFor: c2}\n",
        "resourceTypeCapabilities[1].aliasFor: 'b' is an alias for 'c2'",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}}}\n  - {type: b, aliasFor: x}\n"
        "  - {type: x, aliasFor: a}\n",
        "resourceTypeCapabilities[1].aliasFor: 'b' is an alias for 'x'",  # no alias chains
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}}}\n"
        "  - {type: b, aliasFor: a, operations: {create: {workflow: c}}}\n",
        "resourceTypeCapabilities[1]: give either 'aliasFor' or 'operations', not both",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: nope}}}\n",
        ".operations.create.workflow: workflow 'nope' is not declared under workflows (declared: c, d)",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: d}}}\n",
        ".operations.create.workflow: workflow 'd' is declared with operation 'delete', not 'create'",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}, delete: {workflow: c}}}\n",
        ".operations.delete.workflow: workflow 'c' is declared with operation 'create', not 'delete'",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflows: [{name: nope, tags: [x]}]}}}\n",
        ".operations.create.workflows[0].name: workflow 'nope' is not declared",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflows: [{name: d}]}}}\n",
        ".operations.create.workflows[0].name: workflow 'd' is declared with operation 'delete'",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflows: [{name: c}], default: z}}}\n",
        ".operations.create.default: 'z' is not one of the listed workflows",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflows: [{name: c, tags: x}]}}}\n",
        ".operations.create.workflows[0].tags: must be a list",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflows: [{name: c, tags: [1]}]}}}\n",
        ".operations.create.workflows[0].tags: must be a list of strings",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c, workflows: [{name: c}]}}}\n",
        ".operations.create: give either 'workflow' or 'workflows', not both",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {}}}\n",
        ".operations.create: needs 'workflow' or 'workflows'",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: c}}\n",
        ".operations.create: must be a mapping",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {delete: {workflow: d}}}\n",
        ".operations.create: is required",
    ),
    ("resourceTypeCapabilities:\n  - {type: a, operations: {}}\n", ".operations.create: is required"),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}, patch: {workflow: c}}}\n",
        ".operations.patch: unknown operation (use create, update, delete)",
    ),
    ("resourceTypeCapabilities:\n  - {type: a}\n", "resourceTypeCapabilities[0].operations: is required"),
    (
        "resourceTypeCapabilities:\n  - {operations: {create: {workflow: c}}}\n",
        "resourceTypeCapabilities[0].type: is required",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: 5, operations: {create: {workflow: c}}}\n",
        "[0].type: must be a string",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}}}\n"
        "  - {type: a, operations: {create: {workflow: c}}}\n",
        "resourceTypeCapabilities[1].type: 'a' is listed twice",
    ),
    (
        "resourceTypeCapabilities:\n  - {type: a, operations: {create: {workflow: c}}}\n  - {type: a, aliasFor: a}\n",
        "resourceTypeCapabilities[1].type: 'a' is listed twice",
    ),
    ("resourceTypeCapabilities: {type: a}\n", ".capabilities.resourceTypeCapabilities: must be a list"),
    ("resourceTypes: postgres\n", ".capabilities.resourceTypes: must be a list"),
    (
        "resourceTypeCapabilities:\n  - postgres\n",
        "resourceTypeCapabilities[0]: must be a mapping, got string",
    ),
]


@pytest.mark.parametrize(("caps", "fragment"), CAP_ERRORS)
def test_bad_capabilities(tmp_path: Path, caps: str, fragment: str) -> None:
    d = write_provider(
        tmp_path, "p", manifest("p", caps, entry("c") + entry("d", "delete")), {"c": wf("c"), "d": wf("d")}
    )
    fails(d, fragment)


# --- the catalog: several providers, folder scan and config file -------------------------------------------


def simple(root: Path, folder: str, name: str, rtype: str) -> Path:
    caps = (
        f"resourceTypeCapabilities:\n  - type: {rtype}\n    operations:\n      create: {{workflow: make}}\n"
    )
    return write_provider(root, folder, manifest(name, caps, entry("make")), {"make": wf("make")})


def test_two_providers_claiming_one_type(tmp_path: Path) -> None:
    root = tmp_path / "providers"
    simple(root, "alpha", "alpha-team", "postgres")
    simple(root, "beta", "beta-team", "postgres")
    with pytest.raises(CatalogError) as err:
        load_catalog(root, None)
    message = str(err.value)
    assert "'alpha-team'" in message and "'beta-team'" in message and "'postgres'" in message
    assert (
        str(root / "alpha" / "provider.yaml") in message and str(root / "beta" / "provider.yaml") in message
    )


def test_alias_clashing_with_another_providers_type(tmp_path: Path) -> None:
    root = tmp_path / "providers"
    simple(root, "alpha", "alpha-team", "postgresql")
    caps = (
        "resourceTypeCapabilities:\n  - {type: postgres, operations: {create: {workflow: make}}}\n"
        "  - {type: postgresql, aliasFor: postgres}\n"
    )
    write_provider(root, "beta", manifest("beta-team", caps, entry("make")), {"make": wf("make")})
    with pytest.raises(CatalogError, match=r"'beta-team' claims resource type 'postgresql'.*'alpha-team'"):
        load_catalog(root, None)


def test_two_folders_with_one_provider_name(tmp_path: Path) -> None:
    root = tmp_path / "providers"
    simple(root, "one", "same", "a")
    simple(root, "two", "same", "b")
    with pytest.raises(
        CatalogError, match=r"two/provider\.yaml: metadata\.name: provider 'same' is also loaded from"
    ):
        load_catalog(root, None)


def test_folder_scan_ignores_folders_without_manifest(tmp_path: Path) -> None:
    root = tmp_path / "providers"
    simple(root, "one", "one", "a")
    (root / "docs").mkdir()
    (root / "README.md").write_text("hi")
    assert list(load_catalog(root, None).providers) == ["one"]


def test_empty_and_missing_providers_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_catalog(tmp_path / "empty", None).providers == {}
    with pytest.raises(CatalogError, match="providers directory not found"):
        load_catalog(tmp_path / "nope", None)
    assert load_catalog(None, None).known_types() == []


def write_config(tmp_path: Path, providers: str) -> Path:
    config = tmp_path / "admin-config.yaml"
    config.write_text(
        "admin:\n  defaultCostCenter: x\nproviders:\n" + textwrap.indent(textwrap.dedent(providers), "  ")
    )
    return config


def test_config_providers(tmp_path: Path) -> None:
    simple(tmp_path / "providers", "in-dir", "in-dir", "a")
    simple(tmp_path / "elsewhere", "relative", "relative", "b")
    absolute = simple(tmp_path / "abs", "absolute", "absolute", "c")
    config = write_config(
        tmp_path,
        f"""\
        - name: relative
          type: filesystem
          path: ./elsewhere/relative
          enabled: true
        - name: absolute
          path: {absolute}
        """,
    )
    catalog = load_catalog(tmp_path / "providers", config)
    assert list(catalog.providers) == ["in-dir", "relative", "absolute"]
    assert catalog.resolve("c", "create").provider.name == "absolute"


def test_same_provider_via_folder_scan_and_config_is_loaded_once(tmp_path: Path) -> None:
    directory = simple(tmp_path / "providers", "db", "db-team", "postgres")
    config = write_config(
        tmp_path,
        f"""\
        - name: db-team
          type: filesystem
          path: ./providers/db
          enabled: true
        - name: db-team-again
          path: {directory}/
        - name: db-team-dotted
          path: ./providers/../providers/db
        """,
    )
    catalog = load_catalog(tmp_path / "providers", config)
    assert list(catalog.providers) == ["db-team"]
    assert catalog.resolve("postgres", "create").provider.name == "db-team"


def test_same_provider_via_symlink_is_loaded_once(tmp_path: Path) -> None:
    simple(tmp_path / "providers", "db", "db-team", "postgres")
    (tmp_path / "link").symlink_to(tmp_path / "providers" / "db")
    config = write_config(tmp_path, "- name: db\n  path: ./link\n")
    assert list(load_catalog(tmp_path / "providers", config).providers) == ["db-team"]


def test_config_disabled_provider_is_skipped(tmp_path: Path) -> None:
    simple(tmp_path / "extra", "off", "off-team", "a")
    config = write_config(
        tmp_path,
        """\
        - name: off-team
          type: filesystem
          path: ./extra/off
          enabled: false
        - name: gone
          path: ./does/not/exist
          enabled: false
        """,
    )
    assert load_catalog(None, config).providers == {}


def test_config_path_missing(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "- name: gone\n  type: filesystem\n  path: ./does/not/exist\n  enabled: true\n"
    )
    with pytest.raises(CatalogError) as err:
        load_catalog(None, config)
    message = str(err.value)
    assert message.startswith(f"{config}.providers[0].path:")
    assert str(tmp_path / "does/not/exist/provider.yaml") in message and "not found" in message


@pytest.mark.parametrize(
    ("providers", "fragment"),
    [
        (
            "- name: x\n  type: svn\n  path: ./x\n",
            ".providers[0].type: provider source type 'svn' is not supported (use filesystem or git)",
        ),
        ("- name: x\n", ".providers[0].path: is required"),
        ("- name: x\n  path: 5\n", ".providers[0].path: must be a string"),
        ("- name: x\n  path: ./x\n  enabled: 'no'\n", ".providers[0].enabled: must be a boolean, got string"),
        ("- ./x\n", ".providers[0]: must be a mapping, got string"),
    ],
)
def test_bad_config_entries(tmp_path: Path, providers: str, fragment: str) -> None:
    config = write_config(tmp_path, providers)
    with pytest.raises(CatalogError) as err:
        load_catalog(None, config)
    assert str(config) in str(err.value) and fragment in str(err.value)


def test_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="config file not found"):
        load_catalog(None, tmp_path / "admin-config.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: .*malformed YAML"):
        load_catalog(None, bad)
    bad.write_text("providers: {a: b}\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml\.providers: must be a list"):
        load_catalog(None, bad)
    bad.write_text("- a\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: must be a mapping"):
        load_catalog(None, bad)
    bad.write_text("providers: []\nproviders: []\n")
    with pytest.raises(CatalogError, match="duplicate key 'providers'"):
        load_catalog(None, bad)


def test_config_without_providers(tmp_path: Path) -> None:
    config = tmp_path / "admin-config.yaml"
    config.write_text("admin:\n  x: 1\n")
    assert load_catalog(None, config).providers == {}
    config.write_text("")
    assert load_catalog(None, config).providers == {}


def test_broken_provider_in_config_is_reported(tmp_path: Path) -> None:
    directory = write_provider(tmp_path / "extra", "p", "metadata: {name: p, version: 1.0}\n")
    config = write_config(tmp_path, "- name: p\n  path: ./extra/p\n")
    with pytest.raises(
        CatalogError, match=rf"{directory}/provider\.yaml\.metadata\.version: must be a string"
    ):
        load_catalog(None, config)
