import pytest

from innominatus import strict_yaml
from innominatus.strict_yaml import StrictLoader, YamlError, load_yaml

LOADERS = [StrictLoader, strict_yaml._Loader, strict_yaml._SmallLoader]


def load_with(loader: type, text: str, source: str = "spec.yaml"):
    return strict_yaml._load(text, source, loader)


@pytest.mark.parametrize("loader", LOADERS)
def test_loads_a_plain_document(loader: type) -> None:
    assert load_with(loader, "a: 1\nb: [x, {c: true}]\n") == {"a": 1, "b": ["x", {"c": True}]}


def test_empty_and_comment_only_documents_are_none() -> None:
    assert load_yaml("") is None
    assert load_yaml("# nothing here\n") is None


@pytest.mark.parametrize("loader", LOADERS)
def test_duplicate_top_level_key_names_source_line_and_column(loader: type) -> None:
    with pytest.raises(YamlError) as info:
        load_with(loader, "a: 1\nb: 2\na: 3\n")
    assert str(info.value) == "spec.yaml: line 3, column 1: duplicate key 'a' (first defined on line 1)"
    assert info.value.line == 3
    assert info.value.column == 1
    assert info.value.path == "a"
    assert info.value.detail == "line 3, column 1: duplicate key 'a' (first defined on line 1)"


@pytest.mark.parametrize("loader", LOADERS)
def test_nested_duplicate_key_reports_its_path(loader: type) -> None:
    text = "resources:\n  database:\n    type: pg\n  cache:\n    type: redis\n  database:\n    type: x\n"
    with pytest.raises(YamlError) as info:
        load_with(loader, text)
    assert "line 6, column 3: duplicate key 'database'" in str(info.value)
    assert info.value.path == "resources.database"


def test_duplicate_key_inside_a_list_item() -> None:
    with pytest.raises(YamlError) as info:
        load_yaml("items:\n  - name: a\n    name: b\n")
    assert info.value.path == "items.0.name"
    assert info.value.line == 3


def test_quoted_and_plain_spelling_of_the_same_key_is_a_duplicate() -> None:
    with pytest.raises(YamlError, match="duplicate key"):
        load_yaml("a: 1\n'a': 2\n")


def test_int_keys_that_construct_equal_are_duplicates() -> None:
    with pytest.raises(YamlError, match="duplicate key '0x1'"):
        load_yaml("1: a\n0x1: b\n")


def test_same_key_in_sibling_mappings_is_fine() -> None:
    assert load_yaml("a: {k: 1}\nb: {k: 2}\n") == {"a": {"k": 1}, "b": {"k": 2}}


def test_merge_keys_may_be_overridden() -> None:
    text = "base: &base {k: 1, j: 2}\nchild:\n  <<: *base\n  k: 3\n"
    assert load_yaml(text)["child"] == {"k": 3, "j": 2}


@pytest.mark.parametrize("loader", LOADERS)
def test_malformed_yaml(loader: type) -> None:
    with pytest.raises(YamlError) as info:
        load_with(loader, "a: 1\n  b: 2\n")
    message = str(info.value)
    assert message.startswith("spec.yaml: line 2, column 4: malformed YAML: mapping values are not allowed")
    assert "\n" not in message
    assert info.value.line == 2


def test_unclosed_flow_sequence() -> None:
    with pytest.raises(YamlError, match="malformed YAML"):
        load_yaml("a: [1, 2\n")


@pytest.mark.parametrize("loader", LOADERS)
def test_more_than_one_document_is_refused(loader: type) -> None:
    with pytest.raises(YamlError) as info:
        load_with(loader, "a: 1\n---\nb: 2\n")
    assert "more than one YAML document" in str(info.value)
    assert info.value.line == 2


def test_a_leading_document_marker_is_fine() -> None:
    assert load_yaml("---\na: 1\n") == {"a": 1}


@pytest.mark.parametrize("loader", LOADERS)
def test_control_characters_are_refused_with_a_position(loader: type) -> None:
    with pytest.raises(YamlError) as info:
        load_with(loader, "a: 1\nb: \x07\n")
    assert "malformed YAML: unacceptable character #x0007" in str(info.value)
    assert info.value.line == 2


@pytest.mark.parametrize("loader", LOADERS)
def test_undefined_alias_is_named_where_it_is_used(loader: type) -> None:
    with pytest.raises(YamlError) as info:
        load_with(loader, "a: 1\nb: [x, *nope]\n")
    assert str(info.value) == "spec.yaml: line 2, column 8: malformed YAML: found undefined alias 'nope'"


def test_documents_either_side_of_the_small_size_read_the_same() -> None:
    short = "a: &x [1, {b: c}]\nd: *x\n"
    long = short + "# padding\n" * (strict_yaml.SMALL_DOCUMENT_CHARS // 10)
    assert len(short) <= strict_yaml.SMALL_DOCUMENT_CHARS < len(long)
    assert load_yaml(short) == load_yaml(long) == {"a": [1, {"b": "c"}], "d": [1, {"b": "c"}]}


@pytest.mark.parametrize("text", ["[" * 2000 + "]" * 2000, "- " * 2000 + "x\n", "[" * 500 + "]" * 500])
def test_deep_nesting_in_a_short_document_is_refused_not_a_crash(text: str) -> None:
    assert len(text) <= strict_yaml.SMALL_DOCUMENT_CHARS
    with pytest.raises(YamlError) as info:
        load_yaml(text)
    assert "nesting is deeper than 100 levels" in str(info.value)


def test_python_tags_are_refused() -> None:
    with pytest.raises(YamlError, match="could not determine a constructor"):
        load_yaml("a: !!python/object/apply:os.system ['true']\n")


def test_unhashable_key_is_refused() -> None:
    with pytest.raises(YamlError, match="unhashable key"):
        load_yaml("? [a, b]\n: 1\n")


@pytest.mark.parametrize("loader", LOADERS)
def test_billion_laughs_is_refused_quickly(loader: type) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(YamlError) as info:
        load_with(loader, "\n".join(lines) + "\n")
    assert f"more than {strict_yaml.MAX_NODES} nodes" in str(info.value)


def test_moderate_alias_use_is_fine() -> None:
    text = "defaults: &d {cpu: 1, memory: 2}\na: *d\nb: *d\n"
    assert load_yaml(text)["b"] == {"cpu": 1, "memory": 2}


@pytest.mark.parametrize("loader", LOADERS)
def test_recursive_alias_is_refused(loader: type) -> None:
    with pytest.raises(YamlError, match="nesting is deeper"):
        load_with(loader, "a: &a [*a]\n")


@pytest.mark.parametrize("loader", LOADERS)
def test_absurd_nesting_is_refused_without_crashing(loader: type) -> None:
    with pytest.raises(YamlError, match="nesting is deeper"):
        load_with(loader, "[" * 100_000 + "]" * 100_000)


def test_nesting_just_over_the_cap() -> None:
    depth = strict_yaml.MAX_DEPTH
    with pytest.raises(YamlError, match="nesting is deeper"):
        load_yaml("[" * (depth + 1) + "]" * (depth + 1))
    assert load_yaml("[" * (depth - 1) + "[x]" + "]" * (depth - 1)) is not None


@pytest.mark.parametrize("loader", LOADERS)
def test_dates_and_equals_stay_strings(loader: type) -> None:
    # Timestamps would not survive JSON storage; a bare '=' crashes PyYAML's SafeLoader.
    assert load_with(loader, "d: 2024-01-01\nt: 2001-12-14t21:59:43.10-05:00\ne: =\n") == {
        "d": "2024-01-01",
        "t": "2001-12-14t21:59:43.10-05:00",
        "e": "=",
    }


def test_booleans_and_numbers_still_resolve() -> None:
    assert load_yaml("a: true\nb: 3\nc: 1.5\nd: null\n") == {"a": True, "b": 3, "c": 1.5, "d": None}


def test_default_source_name() -> None:
    with pytest.raises(YamlError) as info:
        load_yaml("a: [")
    assert str(info.value).startswith("<input>: line ")


def test_error_without_position_has_no_line() -> None:
    error = YamlError("x.yaml", "something odd")
    assert str(error) == "x.yaml: something odd"
    assert error.line is None


def test_text_is_counted_after_alias_expansion() -> None:
    big = "x" * 50_000
    fine = f"base: &a {big}\nuses: [{', '.join(['*a'] * 19)}]\n"  # 20 × 50 kB: under 1 MiB expanded
    assert len(load_yaml(fine)["uses"]) == 19
    bomb = f"base: &a {big}\nuses: [{', '.join(['*a'] * 21)}]\n"  # 22 × 50 kB: over
    with pytest.raises(YamlError, match="once its aliases are expanded"):
        load_yaml(bomb)
    keys = "k: &k {" + ", ".join(f"{'y' * 1000}{i}: 1" for i in range(600)) + "}\nagain: [*k, *k]\n"
    with pytest.raises(YamlError, match="once its aliases are expanded"):  # keys count too
        load_yaml(keys)
