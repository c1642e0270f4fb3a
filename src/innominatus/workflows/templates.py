"""The one template engine: sandboxed Jinja2 that also loads upstream Go-template workflow files.

Workflow files are written by platform teams; the values rendered into them (``parameters``) come from
app teams' specs. So:

* values are data, never templates: nothing renders a value a second time;
* templates run in Jinja's sandbox (no ``__class__`` walks) with ``StrictUndefined`` (typos fail loudly);
* shell templates (``shell=True``, for bash scripts) refuse to emit any expression whose text holds a
  shell metacharacter unless it went through the ``shell_quote`` filter.

Go-like rendering of values: booleans render as ``true``/``false``, ``None`` renders as the empty
string, lists and dicts render as JSON.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, pass_context
from jinja2 import Template as _JinjaTemplate
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import missing

from innominatus.workflows.shell_context import misplaced_quotes

__all__ = [
    "SHELL_METACHARACTERS",
    "RenderError",
    "ShellInjectionError",
    "Template",
    "TemplateError",
    "compile_template",
    "shell_quote",
    "translate_go_template",
]

# Whitespace splits words as surely as `;` separates commands: every character `str.splitlines` breaks
# at, besides space and tab.
SHELL_METACHARACTERS = frozenset("$`\\\"';&|<>(){}[]*?!#~ \t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


class TemplateError(Exception):
    """A template that cannot be compiled (raised at load time)."""


class RenderError(Exception):
    """A template that failed while rendering; the message starts with the template's ``where``."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}" if where else detail)
        self.where = where
        self.detail = detail


class ShellInjectionError(RenderError):
    """A shell template would have put shell metacharacters from a value into a script."""


# --------------------------------------------------------------------------------------------------
# Value wrappers: they remember where a value came from, for shell checks and readable errors.


class _Param(str):
    """A string taken from a spec parameter; ``param`` names it (``db``, ``db.host``, ``hosts[0]``)."""

    param: str

    def __new__(cls, value: str, param: str) -> _Param:
        obj = super().__new__(cls, value)
        obj.param = param
        return obj


class _ShellSafe(str):
    """Output of ``shell_quote``: the shell check lets it through."""


class _Tracked(dict[str, Any]):
    """A context mapping that knows its expression path (``parameters``, ``steps["x"].outputs``)."""

    _path: str
    _param: str | None


class _TrackedList(list[Any]):
    _path: str
    _param: str | None


_JINJA_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "elif",
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "for",
        "endfor",
        "endif",
        "block",
        "extends",
        "import",
        "include",
        "from",
        "with",
        "without",
        "set",
        "macro",
        "call",
        "filter",
        "raw",
    }
)


def _is_name(segment: str) -> bool:
    return segment.isidentifier() and segment not in _JINJA_KEYWORDS


def _join_path(path: str, key: Any) -> str:
    if isinstance(key, str) and _is_name(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, default=str)}]"


def _join_param(param: str | None, key: Any) -> str | None:
    if param is None:
        return None
    if isinstance(key, int):
        return f"{param}[{key}]"
    return f"{param}.{key}" if param else str(key)


def _wrap(value: Any, path: str, param: str | None) -> Any:
    """Copy a context value into tracked containers; parameter strings become ``_Param``."""
    if isinstance(value, Mapping):
        mapping = _Tracked(
            {k: _wrap(v, _join_path(path, k), _join_param(param, k)) for k, v in value.items()}
        )
        mapping._path, mapping._param = path, param
        return mapping
    if isinstance(value, list | tuple):
        items = _TrackedList(_wrap(v, f"{path}[{i}]", _join_param(param, i)) for i, v in enumerate(value))
        items._path, items._param = path, param
        return items
    if param and isinstance(value, str) and not isinstance(value, _Param):
        return _Param(value, param)
    return value


def _param_strings(value: Any) -> Iterator[_Param]:
    if isinstance(value, _Param):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _param_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _param_strings(v)


# --------------------------------------------------------------------------------------------------
# Rendering of values.


def _to_text(value: Any) -> str:
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined raises here
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def shell_quote(value: Any) -> str:
    """Jinja filter: the value as one shell word, safe to put anywhere in a bash script."""
    return _ShellSafe(shlex.quote(_to_text(value)))


def _metachars(text: str) -> list[str]:
    seen: list[str] = []
    for ch in text:
        if ch in SHELL_METACHARACTERS and ch not in seen:
            seen.append(ch)
    return seen


class _ShellRefusal(Exception):
    """Raised inside Jinja by the shell finalizer; ``Template.render`` turns it into ShellInjectionError."""


_QUOTE_HINT = "pass it through the shell_quote filter to use it in a script"


def _finalize_plain(value: Any) -> str:
    return _to_text(value)


@pass_context
def _finalize_shell(context: Context, value: Any) -> str:
    text = _to_text(value)
    if isinstance(value, _ShellSafe):
        return text
    bad = _metachars(text)
    if not bad:
        return text
    chars = ", ".join(repr(c) for c in bad)
    param = value.param if isinstance(value, _Param) else getattr(value, "_param", None)
    if param:
        raise _ShellRefusal(f"parameter {param!r} holds shell metacharacters ({chars}) — {_QUOTE_HINT}")
    # Not a parameter value as-is (a filter result, a step output...): refuse anyway, and point at
    # the parameter whose text it contains, if any.
    lowered = text.lower()
    for candidate in _param_strings(context.get("parameters")):
        if _metachars(candidate) and candidate.lower() in lowered:
            raise _ShellRefusal(
                f"expression renders shell metacharacters ({chars}) from parameter {candidate.param!r}"
                f" — {_QUOTE_HINT}"
            )
    raise _ShellRefusal(f"expression renders shell metacharacters ({chars}) — {_QUOTE_HINT}")


# --------------------------------------------------------------------------------------------------
# Environment.


class _Undefined(StrictUndefined):
    """StrictUndefined whose message is the expression path, e.g. ``parameters.db_nam is undefined``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = self._undefined_name
        obj = self._undefined_obj
        if isinstance(obj, _Tracked | _TrackedList):
            return f"{_join_path(obj._path, name)} is undefined"
        if obj is missing:
            return f"{name} is undefined"
        return super()._undefined_message


class _Environment(SandboxedEnvironment):
    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        if isinstance(obj, _Tracked | _TrackedList):
            what = _join_path(obj._path, attribute)
        else:
            kind = "str" if isinstance(obj, str) else type(obj).__name__
            what = f"attribute {attribute!r} of a {kind}"
        return self.undefined(f"access to {what} is not allowed", name=attribute, obj=obj, exc=SecurityError)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `parameters.values` / `.items` must be the parameter, not the dict method.
        if isinstance(obj, _Tracked) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _make_env(shell: bool) -> _Environment:
    env = _Environment(
        undefined=_Undefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize_shell if shell else _finalize_plain,
    )
    env.filters["shell_quote"] = shell_quote
    return env


_ENVS = {False: _make_env(False), True: _make_env(True)}


# --------------------------------------------------------------------------------------------------
# Template.


class Template:
    """A compiled template: compile once at load, render many times."""

    def __init__(self, compiled: _JinjaTemplate, *, where: str, shell: bool, source: str) -> None:
        self._compiled = compiled
        self.where = where
        self.shell = shell
        self.source = source  # the Jinja text after Go translation

    def render(self, context: Mapping[str, Any]) -> str:
        ctx: dict[str, Any] = {}
        for key, value in context.items():
            ctx[key] = _wrap(value, key, "" if key == "parameters" else None)
        try:
            return self._compiled.render(ctx)
        except _ShellRefusal as exc:
            raise ShellInjectionError(self.where, str(exc)) from None
        except UndefinedError as exc:
            raise RenderError(self.where, exc.message or "undefined value") from None
        except SecurityError as exc:
            raise RenderError(self.where, str(exc)) from None
        except RenderError:
            raise
        except Exception as exc:
            raise RenderError(self.where, f"{type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"Template(where={self.where!r}, shell={self.shell})"


def compile_template(
    source: str, *, where: str, shell: bool = False, step_names: Collection[str] = ()
) -> Template:
    """Translate Go-template forms, then compile; errors raise TemplateError starting with ``where``."""
    try:
        text = translate_go_template(source, step_names)
    except TemplateError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    try:
        compiled = _ENVS[shell].from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: {exc.message} (line {exc.lineno})") from None
    if shell:
        for line, why in misplaced_quotes(text):
            raise TemplateError(
                f"{where}: line {line}: shell_quote output {why} is not one word: the shell reads its "
                "quotes as text there and still runs $(...) in the value; use it unquoted "
                "(echo {{ x | shell_quote }}) or in a quoted here-document (<<'EOF')"
            )
    return Template(compiled, where=where, shell=shell, source=text)


# --------------------------------------------------------------------------------------------------
# Go-template translation.

_GO_KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
)
# Go builtins that, written first and followed by an argument, can only be Go.
_GO_FUNCS = frozenset(
    {
        "and",
        "or",
        "not",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "printf",
        "print",
        "println",
        "index",
        "len",
        "slice",
        "html",
        "js",
        "urlquery",
        "call",
    }
)
_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<rune>'(?:[^'\\\n]|\\.)*')
  | (?P<comment>/\*.*?\*/)
  | (?P<field>(?:\.[A-Za-z0-9_][\w-]*)+)
  | (?P<dot>\.)
  | (?P<var>\$[\w]*)
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?))
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<pipe>\|)
  | (?P<assign>:?=)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _go_tokens(body: str) -> list[tuple[str, str]]:
    tokens = []
    for m in _TOKEN_RE.finditer(body):
        kind = m.lastgroup or "other"
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


_ATTR_OWNERS = frozenset({"ident", "str", "rparen", "other_close"})


def _looks_like_go(body: str) -> bool:
    stripped = body.strip()
    if not stripped:
        return False
    if stripped[0] in ".$`" or stripped.startswith("/*"):
        return True
    first = re.match(r"[A-Za-z_]\w*", stripped)
    if first:
        word = first.group()
        if word in _GO_KEYWORDS:
            return True
        rest = stripped[first.end() :]
        if word in _GO_FUNCS and re.match(r"\s+[\"`.$(0-9-]", rest):
            return True
    # A `.field` or `$var` not preceded by a name, `)` or `]` is Go; Jinja attribute access never is.
    prev = ""
    for kind, text in _go_tokens(stripped):
        if kind == "var" or (kind in ("field", "dot") and prev not in _ATTR_OWNERS):
            return True
        prev = "other_close" if text in ("]", "}") else kind
    return False


class _GoParser:
    """Translates one Go action body (without delimiters) into a Jinja expression."""

    def __init__(self, body: str, step_names: Collection[str]) -> None:
        self.tokens = _go_tokens(body)
        self.pos = 0
        self.step_names = step_names

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def command(self, stop: str | None = None) -> str:
        """A Go command: an operand, or a builtin function applied to arguments."""
        tok = self.peek()
        if tok is None:
            raise TemplateError("empty Go expression")
        kind, text = tok
        if kind == "ident" and text not in ("true", "false", "nil"):
            self.take()
            args: list[str] = []
            while (nxt := self.peek()) is not None and nxt[0] != stop:
                _unsupported_check(nxt)
                args.append(self.operand())
            return _apply(text, args)
        result = self.operand()
        nxt = self.peek()
        if nxt is not None and nxt[0] != stop:
            _unsupported_check(nxt)
            raise TemplateError(f"unexpected {nxt[1]!r} after {text!r} in Go template action")
        return result

    def operand(self) -> str:
        kind, text = self.take()
        if kind == "field":
            return _field_to_jinja(text, self.step_names)
        if kind == "str":
            return text
        if kind == "raw":
            return repr(text[1:-1])
        if kind == "num":
            return text.replace("_", "")
        if kind == "ident" and text in ("true", "false", "nil"):
            return {"true": "true", "false": "false", "nil": "none"}[text]
        if kind == "lparen":
            inner = self.command(stop="rparen")
            if self.at_end():
                raise TemplateError("unclosed '(' in Go template action")
            self.take()
            return f"({inner})"
        if kind == "ident":
            raise TemplateError(f"Go function {text!r} used as an argument is not supported; wrap it in ( )")
        _unsupported_check((kind, text))
        raise TemplateError(f"unexpected {text!r} in Go template action")


def _unsupported_check(tok: tuple[str, str]) -> None:
    kind, text = tok
    names = {
        "var": f"Go template variables ({text}) are not supported",
        "pipe": "Go template pipelines (|) are not supported",
        "assign": f"Go template variable assignment ({text}) is not supported",
        "dot": "Go template dot (the whole context, '.') is not supported; name a field like .parameters.x",
        "rune": f"Go character literals ({text}) are not supported",
    }
    if kind in names:
        raise TemplateError(names[kind])


def _apply(func: str, args: list[str]) -> str:
    if func in _COMPARISONS:
        if func == "eq" and len(args) >= 2:
            first = args[0]
            alternatives = " or ".join(f"{first} == {other}" for other in args[1:])
            return f"({alternatives})"
        if len(args) != 2:
            raise TemplateError(f"Go function {func!r} takes 2 arguments, got {len(args)}")
        return f"({args[0]} {_COMPARISONS[func]} {args[1]})"
    if func == "not":
        if len(args) != 1:
            raise TemplateError(f"Go function 'not' takes 1 argument, got {len(args)}")
        return f"(not {args[0]})"
    if func in ("and", "or"):
        if not args:
            raise TemplateError(f"Go function {func!r} needs arguments")
        return "(" + f" {func} ".join(args) + ")"
    if func in _GO_KEYWORDS:
        raise TemplateError(f"Go template '{func}' is not supported here")
    raise TemplateError(f"Go template function {func!r} is not supported")


def _field_to_jinja(field: str, step_names: Collection[str]) -> str:
    segments = field.split(".")[1:]
    root, rest = segments[0], segments[1:]
    if not _is_name(root):
        raise TemplateError(f"unsupported Go field {field!r}")
    if root == "steps" and rest:
        name, rest = rest[0], rest[1:]
        expr = f"steps[{json.dumps(name)}]"
        if rest and rest[0] in ("output", "outputs"):
            return expr + ".outputs" + "".join(f"[{json.dumps(k)}]" for k in rest[1:])
        return expr + "".join(_segment(k) for k in rest)
    return root + "".join(_segment(k) for k in rest)


def _segment(key: str) -> str:
    return f".{key}" if _is_name(key) else f"[{json.dumps(key)}]"


def _dashed_step_rewriter(step_names: Collection[str]) -> re.Pattern[str] | None:
    dashed = sorted((n for n in step_names if not n.isidentifier()), key=len, reverse=True)
    if not dashed:
        return None
    names = "|".join(re.escape(n) for n in dashed)
    # strings are matched (and kept) so that text inside them is never rewritten
    strings = r"""(?P<s>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    return re.compile(rf"{strings}|(?<![\w.])steps\.(?P<n>{names})(?![\w-])")


def _rewrite_native(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return text

    def sub(m: re.Match[str]) -> str:
        if m.group("s") is not None:
            return m.group("s")
        return f"steps[{json.dumps(m.group('n'))}]"

    return pattern.sub(sub, text)


def _find_close(source: str, start: int, closer: str) -> int:
    """Index of ``closer`` after ``start``, skipping quoted strings; -1 if none."""
    i, n = start, len(source)
    quote = ""
    while i < n:
        ch = source[i]
        if quote:
            if ch == "\\" and quote != "`":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif source.startswith(closer, i):
            return i
        i += 1
    # An unbalanced quote (e.g. an apostrophe in a comment): fall back to the plain search.
    return source.find(closer, start)


_RAW_OPEN = re.compile(r"\{%-?\s*raw\s*-?%\}")
_RAW_CLOSE = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_OPENER = re.compile(r"\{[{%#]")


def translate_go_template(source: str, step_names: Collection[str] = ()) -> str:
    """Turn the Go-template forms upstream workflow files use into Jinja; native Jinja stays as it is."""
    rewriter = _dashed_step_rewriter(step_names)
    out: list[str] = []
    open_ifs = 0
    i = 0
    while True:
        m = _OPENER.search(source, i)
        if m is None:
            out.append(source[i:])
            break
        j = m.start()
        out.append(source[i:j])
        opener = m.group()
        line = source.count("\n", 0, j) + 1
        if opener == "{#":
            end = source.find("#}", j + 2)
            if (j > 0 and source[j - 1] == "$") or end < 0:
                # bash's ${#var} is not a Jinja comment
                out.append("{% raw %}{#{% endraw %}")
                i = j + 2
            else:
                out.append(source[j : end + 2])
                i = end + 2
            continue
        if opener == "{%":
            raw = _RAW_OPEN.match(source, j)
            if raw:
                close = _RAW_CLOSE.search(source, raw.end())
                stop = close.end() if close else len(source)
                out.append(source[j:stop])
                i = stop
                continue
            end = _find_close(source, j + 2, "%}")
            if end < 0:
                out.append(source[j:])
                break
            out.append("{%" + _rewrite_native(source[j + 2 : end], rewriter) + "%}")
            i = end + 2
            continue
        end = _find_close(source, j + 2, "}}")
        if end < 0:
            out.append(source[j:])
            break
        inner = source[j + 2 : end]
        i = end + 2
        left = "-" if inner.startswith("-") else ""
        right = "-" if inner.endswith("-") and len(inner) > 1 else ""
        body = inner[len(left) : len(inner) - len(right)]
        if not _looks_like_go(body):
            out.append("{{" + _rewrite_native(inner, rewriter) + "}}")
            continue
        newlines = "\n" * inner.count("\n")  # keep line numbers of later errors right
        try:
            translated, open_ifs = _translate_action(body, step_names, open_ifs)
        except TemplateError as exc:
            raise TemplateError(f"{exc} (line {line})") from None
        if translated is None:  # a comment
            comment = body.strip()[2:-2].replace("#}", "# }")
            out.append(f"{{#{left}{comment}{newlines}{right}#}}")
        elif translated.startswith("%"):
            out.append(f"{{%{left} {translated[1:]} {newlines}{right}%}}")
        else:
            out.append(f"{{{{{left} {translated} {newlines}{right}}}}}")
    return "".join(out)


def _translate_action(body: str, step_names: Collection[str], open_ifs: int) -> tuple[str | None, int]:
    """One Go action → Jinja: ``%stmt`` for a statement, an expression otherwise, None for a comment."""
    stripped = body.strip()
    if stripped.startswith("/*"):
        if not stripped.endswith("*/"):
            raise TemplateError("unclosed Go template comment")
        return None, open_ifs
    parser = _GoParser(stripped, step_names)
    first = parser.peek()
    assert first is not None  # _looks_like_go rejects empty bodies
    kind, word = first
    if kind == "ident" and word in _GO_KEYWORDS:
        parser.take()
        if word == "if":
            return "%if " + _whole(parser), open_ifs + 1
        if word == "else":
            if parser.at_end():
                if not open_ifs:
                    raise TemplateError("Go template {{ else }} without {{ if }}")
                return "%else", open_ifs
            nxt = parser.take()
            if nxt == ("ident", "if"):
                if not open_ifs:
                    raise TemplateError("Go template {{ else if }} without {{ if }}")
                return "%elif " + _whole(parser), open_ifs
            raise TemplateError(f"Go template 'else {nxt[1]}' is not supported")
        if word == "end":
            if (extra := parser.peek()) is not None:
                raise TemplateError(f"unexpected {extra[1]!r} after 'end'")
            if not open_ifs:
                raise TemplateError("Go template {{ end }} without {{ if }}")
            return "%endif", open_ifs - 1
        raise TemplateError(f"Go template '{word}' is not supported (only if / else if / else / end)")
    return _whole(parser), open_ifs


def _whole(parser: _GoParser) -> str:
    expr = parser.command()
    if not parser.at_end():
        tok = parser.peek()
        assert tok is not None
        _unsupported_check(tok)
        raise TemplateError(f"unexpected {tok[1]!r} in Go template action")
    return expr
