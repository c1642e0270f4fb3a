"""The template engine: Go-template translation, strictness, sandbox, and the shell guard."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from innominatus.workflows.templates import (
    RenderError,
    ShellInjectionError,
    TemplateError,
    compile_template,
    shell_quote,
    translate_go_template,
)

WHERE = "providers/db/workflows/x.yaml: steps[1].config.script"

SIZE_TIERS = (
    'size: {{ if eq .parameters.size "small" }}5Gi{{ else if eq .parameters.size "medium" }}20Gi'
    "{{ else }}100Gi{{ end }}"
)

UPSTREAM_MANIFEST = """spec:
  teamId: {{ .parameters.app_name }}
  numberOfInstances: {{ .parameters.replicas }}
  volume:
    size: {{ if eq .parameters.size "small" }}5Gi{{ else if eq .parameters.size "medium" }}20Gi{{ else }}100Gi{{ end }}
"""

UPSTREAM_SCRIPT = """#!/bin/bash
set -e
DB_USER="{{ .parameters.db_name }}_app"
cat <<EOF
{"username": "$DB_USER", "password": "x"}
EOF
"""


def render(
    source: str,
    context: dict[str, Any] | None = None,
    *,
    sh: bool = False,
    step_names: list[str] | None = None,
) -> str:
    template = compile_template(source, where=WHERE, shell=sh, step_names=step_names or ())
    return template.render(context or {})


def params(**values: Any) -> dict[str, Any]:
    return {"parameters": values, "steps": {}, "app": {}, "resource": {}}


# --- Go-template translation ------------------------------------------------------------------------


def test_translate_parameter() -> None:
    assert translate_go_template("{{ .parameters.x }}") == "{{ parameters.x }}"


def test_translate_step_output_with_dashes() -> None:
    expected = '{{ steps["generate-mock-credentials"].outputs["username"] }}'
    assert translate_go_template("{{ .steps.generate-mock-credentials.output.username }}") == expected
    assert translate_go_template("{{ .steps.generate-mock-credentials.outputs.username }}") == expected


def test_translate_if_forms() -> None:
    text = translate_go_template(SIZE_TIERS)
    assert '{% if (parameters.size == "small") %}' in text
    assert '{% elif (parameters.size == "medium") %}' in text
    assert "{% else %}" in text and "{% endif %}" in text
    assert "{{" not in text


@pytest.mark.parametrize(
    ("go", "value", "expected"),
    [
        ("ne .parameters.n 3", 3, "no"),
        ("lt .parameters.n 3", 2, "yes"),
        ("le .parameters.n 3", 3, "yes"),
        ("gt .parameters.n 3", 3, "no"),
        ("ge .parameters.n 3", 4, "yes"),
        ("eq .parameters.n 1 2 3", 2, "yes"),
        ("not (eq .parameters.n 3)", 3, "no"),
        ("and .parameters.n (gt .parameters.n 1)", 2, "yes"),
    ],
)
def test_go_comparisons(go: str, value: int, expected: str) -> None:
    assert render("{{ if " + go + " }}yes{{ else }}no{{ end }}", params(n=value)) == expected


def test_go_if_on_flag() -> None:
    source = "{{ if .parameters.flag }}on{{ else }}off{{ end }}"
    assert render(source, params(flag=True)) == "on"
    assert render(source, params(flag=False)) == "off"


@pytest.mark.parametrize(("size", "tier"), [("small", "5Gi"), ("medium", "20Gi"), ("large", "100Gi")])
def test_upstream_manifest_size_tiers(size: str, tier: str) -> None:
    out = render(UPSTREAM_MANIFEST, params(app_name="demo-app", replicas=2, size=size))
    assert out == f"spec:\n  teamId: demo-app\n  numberOfInstances: 2\n  volume:\n    size: {tier}\n"


def test_upstream_outputs_template() -> None:
    source = "{{ .steps.generate-mock-credentials.output.username }}"
    context = params()
    context["steps"] = {"generate-mock-credentials": {"outputs": {"username": "demo_db_app"}}}
    assert render(source, context) == "demo_db_app"


def test_trim_markers_kept() -> None:
    assert translate_go_template("a {{- .parameters.x -}} b") == "a {{- parameters.x -}} b"
    assert render("a\n  {{- .parameters.x -}}\n  b", params(x="X")) == "aXb"


def test_go_comment_becomes_jinja_comment() -> None:
    assert render("a{{/* a note */}}b") == "ab"


def test_native_jinja_untouched() -> None:
    source = '{{ parameters.x }} {% if parameters.n > 1 %}many{% endif %} {{ "abc".upper() }} {# note #}'
    assert translate_go_template(source) == source
    assert render(source, params(x="X", n=2)) == "X many ABC "


def test_native_jinja_dashed_step_names() -> None:
    names = ["create-db", "plain"]
    source = (
        '{{ steps.create-db.outputs.host }}:{% if steps.create-db.outputs.port %}{{ "steps.create-db." }}'
        "{% endif %}"
    )
    translated = translate_go_template(source, names)
    assert translated.startswith(
        '{{ steps["create-db"].outputs.host }}:{% if steps["create-db"].outputs.port %}'
    )
    assert '"steps.create-db."' in translated  # text inside strings is left alone
    context = params()
    context["steps"] = {"create-db": {"outputs": {"host": "h", "port": 5432}}}
    assert render(source, context, step_names=names) == "h:steps.create-db."


def test_bash_length_syntax_is_not_a_jinja_comment() -> None:
    script = 'ARR=(a b)\necho "${#ARR[@]}" {{ .parameters.x }}\n'
    assert render(script, params(x="y"), sh=True) == 'ARR=(a b)\necho "${#ARR[@]}" y\n'


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{{ range .parameters.items }}x{{ end }}", "range"),
        ("{{ with .parameters.x }}x{{ end }}", "with"),
        ("{{ $x := .parameters.a }}", "$x"),
        ("{{ .parameters.a | quote }}", "pipelines"),
        ('{{ printf "%s" .parameters.a }}', "printf"),
        ('{{ define "x" }}{{ end }}', "define"),
        ('{{ template "x" . }}', "template"),
        ("{{ . }}", "dot"),
        ("{{ end }}", "end"),
    ],
)
def test_unsupported_go_raises(source: str, named: str) -> None:
    with pytest.raises(TemplateError) as exc:
        compile_template(source, where=WHERE)
    assert str(exc.value).startswith(WHERE + ": ")
    assert named in str(exc.value)


def test_syntax_error_names_where_and_line() -> None:
    with pytest.raises(TemplateError) as exc:
        compile_template("line one\nline two\n{{ parameters.x }\n", where=WHERE)
    message = str(exc.value)
    assert message.startswith(WHERE + ": ")
    assert "(line 3)" in message


def test_line_numbers_survive_translation() -> None:
    source = '{{ if eq .parameters.a "x" }}\na\n{{ end }}\n{{ parameters.x }\n'
    with pytest.raises(TemplateError, match=r"\(line 4\)"):
        compile_template(source, where=WHERE)


# --- rendering ---------------------------------------------------------------------------------------


def test_missing_parameter_names_it() -> None:
    template = compile_template("{{ .parameters.db_nam }}", where=WHERE)
    with pytest.raises(RenderError) as exc:
        template.render(params(db_name="x"))
    assert str(exc.value) == f"{WHERE}: parameters.db_nam is undefined"
    assert exc.value.detail == "parameters.db_nam is undefined"


def test_missing_step_output_names_it() -> None:
    context = params()
    context["steps"] = {"make-db": {"outputs": {"host": "h"}}}
    with pytest.raises(RenderError, match=r'steps\["make-db"\]\.outputs\.port is undefined'):
        render("{{ .steps.make-db.output.port }}", context)


def test_missing_in_if_is_an_error() -> None:
    with pytest.raises(RenderError, match=r"parameters\.flag is undefined"):
        render("{{ if .parameters.flag }}x{{ end }}", params())


def test_go_like_value_rendering() -> None:
    out = render(
        "{{ parameters.t }} {{ parameters.f }} [{{ parameters.n }}] {{ parameters.l }} {{ parameters.d }}",
        params(t=True, f=False, n=None, l=[1, "a"], d={"k": True}),
    )
    assert out == 'true false [] [1, "a"] {"k": true}'


def test_parameter_named_like_a_dict_method() -> None:
    assert render("{{ parameters.values }}/{{ .parameters.items }}", params(values="v", items="i")) == "v/i"


def test_render_many_times() -> None:
    template = compile_template("{{ .parameters.x }}", where=WHERE)
    assert [template.render(params(x=i)) for i in range(3)] == ["0", "1", "2"]


def test_value_is_data_never_a_template() -> None:
    assert render("{{ .parameters.x }}", params(x="{{ ''.__class__ }}")) == "{{ ''.__class__ }}"


def test_sandbox_blocks_dunder_walks() -> None:
    with pytest.raises(RenderError, match="not allowed"):
        render("{{ parameters.__class__.__mro__ }}", params(x="y"))
    with pytest.raises(RenderError, match="not allowed"):
        render("{{ parameters.x.__class__.__mro__[1].__subclasses__() }}", params(x="y"))


# --- shell guard -------------------------------------------------------------------------------------


def shell_render(source: str, **values: Any) -> str:
    return render(source, params(**values), sh=True)


def run_bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=False)


def test_command_substitution_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ShellInjectionError) as exc:
        shell_render(UPSTREAM_SCRIPT, db_name=f"$(touch {marker})")
    message = str(exc.value)
    assert "parameter 'db_name' holds shell metacharacters ('$', '('" in message
    assert "shell_quote" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "char"),
    [
        ("a; rm -rf /", "';'"),
        ("`id`", "'`'"),
        ("a\nid", r"'\n'"),
        ("a\rb", r"'\r'"),
        ('a"b', "'\"'"),
        ("a'b", '"\'"'),
        ("a && b", "'&'"),
        ("a | b", "'|'"),
        ("a > /etc/x", "'>'"),
        ("*", "'*'"),
        ("~root", "'~'"),
        ("a#b", "'#'"),
        ("a\\b", r"'\\'"),
    ],
)
def test_metacharacters_refused(value: str, char: str) -> None:
    with pytest.raises(ShellInjectionError, match="parameter 'db_name'") as exc:
        shell_render('X="{{ .parameters.db_name }}"', db_name=value)
    assert char in str(exc.value)


def test_nested_parameter_is_named() -> None:
    with pytest.raises(ShellInjectionError, match=r"parameter 'db\.hosts\[1\]'"):
        shell_render("{{ parameters.db.hosts[1] }}", db={"hosts": ["a", "b;c"]})


def test_transformed_value_still_refused_and_traced() -> None:
    traced = r"expression renders shell metacharacters .* from parameter 'db_name'"
    with pytest.raises(ShellInjectionError, match=traced):
        shell_render("{{ parameters.db_name | upper }}", db_name="$(id)")
    with pytest.raises(ShellInjectionError, match="expression renders shell metacharacters"):
        shell_render('{{ "x" ~ parameters.a ~ "y" }}', a="a;b")


def test_step_output_with_metacharacters_refused() -> None:
    context = params()
    context["steps"] = {"s": {"outputs": {"v": "$(id)"}}}
    with pytest.raises(ShellInjectionError, match="expression renders shell metacharacters"):
        render("{{ .steps.s.output.v }}", context, sh=True)


def test_template_literal_in_value_refused_in_shell() -> None:
    with pytest.raises(ShellInjectionError, match="parameter 'x'"):
        shell_render("echo {{ .parameters.x }}", x="{{ ''.__class__ }}")


def test_shell_quote_makes_it_safe(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = f"$(touch {marker}); `touch {marker}` \"'\n"
    script = shell_render('X={{ parameters.db_name | shell_quote }}\nprintf "%s" "$X"', db_name=value)
    result = run_bash(script, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == value
    assert not marker.exists()


def test_shell_quote_filter_function() -> None:
    assert shell_quote("a b") == "'a b'"
    assert shell_quote(True) == "true"
    assert render("{{ parameters.x | shell_quote }}", params(x="it's")) == "'it'\"'\"'s'"


PLAIN = [
    "demo_db",
    "small",
    "2",
    "15",
    "demo-app",
    "a.b",
    "x_y",
    "10.0.0.1:5432",
    "user@host",
    "postgresql://u:p@h:5432/db",
    "=",
    ",",
    "+",
    "%",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(v, v) for v in PLAIN] + [(2, "2"), (15, "15"), (1.5, "1.5"), (True, "true"), (None, "")],
)
def test_plain_values_pass(value: Any, expected: str) -> None:
    assert shell_render("{{ .parameters.v }}", v=value) == expected


def test_upstream_script_renders_and_runs(tmp_path: Path) -> None:
    script = shell_render(UPSTREAM_SCRIPT, db_name="demo_db")
    assert 'DB_USER="demo_db_app"' in script
    result = run_bash(script, tmp_path)
    assert '"username": "demo_db_app"' in result.stdout


def test_template_text_itself_is_not_checked() -> None:
    # metacharacters written by the platform team in the template are the script itself
    assert shell_render('echo "$HOME" {{ .parameters.v }} | cat', v="x") == 'echo "$HOME" x | cat'


def test_non_shell_templates_render_values_as_they_are() -> None:
    assert render("{{ .parameters.v }}", params(v="$(id); `x`")) == "$(id); `x`"


def test_go_raw_string_literal() -> None:
    assert render('{{ if eq .parameters.q `say "hi"` }}yes{{ end }}', params(q='say "hi"')) == "yes"


def test_whitespace_that_would_split_arguments_goes_through_shell_quote(tmp_path: Path) -> None:
    value = "two words\u2028and\tmore"
    script = shell_render("printf '%s|' {{ parameters.v | shell_quote }}", v=value)
    assert run_bash(script, tmp_path).stdout == value + "|"  # one argument, exactly the value


@pytest.mark.parametrize(
    ("script", "line", "where"),
    [
        ('echo "{{ parameters.v | shell_quote }}"\n', 1, "inside double quotes"),
        ('set -e\nX="a {{ parameters.v | shell_quote }} b"\n', 2, "inside double quotes"),
        ("cat <<EOF\n{{ parameters.v | shell_quote }}\nEOF\n", 2, "unquoted here-document"),
        ("cat <<-END\n\t{{ parameters.v | shell_quote }}\n\tEND\n", 2, "unquoted here-document"),
    ],
)
def test_shell_quote_where_its_quotes_mean_nothing_is_refused_at_load(
    script: str, line: int, where: str
) -> None:
    with pytest.raises(TemplateError) as refused:
        compile_template(script, where="providers/p/workflows/w.yaml: steps[0].config.script", shell=True)  # noqa: S604
    message = str(refused.value)
    assert message.startswith(f"providers/p/workflows/w.yaml: steps[0].config.script: line {line}: ")
    assert where in message


@pytest.mark.parametrize(
    "script",
    [
        "echo {{ parameters.v | shell_quote }}\n",
        "echo 'lit' {{ parameters.v | shell_quote }} \"$HOME\"\n",
        "cat <<'EOF'\n{{ parameters.v | shell_quote }}\nEOF\necho {{ parameters.v | shell_quote }}\n",
        '# "{{ parameters.v | shell_quote }}\necho ok\n',
        "X=$(printf %s {{ parameters.v | shell_quote }})\n",
    ],
)
def test_shell_quote_where_the_shell_reads_quotes_loads(script: str) -> None:
    compile_template(script, where="w", shell=True)  # noqa: S604
