"""Where in a bash script each template expression lands, read before the script ever runs.

`shell_quote` makes a value one shell word, in single quotes. That is only safe where the shell reads
quotes: inside double quotes (`"{{ x | shell_quote }}"`) or an unquoted here-document (`<<EOF`), the
single quotes are literal text and `$(...)` in the value still runs. Such placements are refused when the
provider loads. The reading follows bash's quoting (single and double quotes, backslashes, `$'...'`,
`$(...)` and backticks, comments, here-documents with quoted or unquoted delimiters), not its grammar.
"""

from __future__ import annotations

import re

_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|\\?([A-Za-z_][A-Za-z0-9_]*))")
_JINJA_OPEN = re.compile(r"\{\{|\{%|\{#")
_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}"}


def misplaced_quotes(script: str) -> list[tuple[int, str]]:
    """(line, why) for every `shell_quote` expression inside double quotes or an unquoted heredoc."""
    found: list[tuple[int, str]] = []
    stack = ["code"]  # code | single | double | subst | backtick
    heredocs: list[tuple[str, bool, bool]] = []  # pending: (delimiter, strip tabs, expands)
    in_heredoc: tuple[str, bool, bool] | None = None
    line = 1
    i, n = 0, len(script)
    at_line_start = True
    while i < n:
        if in_heredoc is not None and at_line_start:
            end = script.find("\n", i)
            end = n if end < 0 else end
            body = script[i:end]
            delimiter, strip, expands = in_heredoc
            if (body.lstrip("\t") if strip else body) == delimiter:
                in_heredoc = heredocs.pop(0) if heredocs else None
            elif expands:
                for expression in re.finditer(r"\{\{(.*?)\}\}", body):
                    if "shell_quote" in expression.group(1):
                        found.append((line, "inside an unquoted here-document (<<" + delimiter + ")"))
            i, line, at_line_start = end + 1, line + 1, True
            continue
        at_line_start = False
        opened = _JINJA_OPEN.match(script, i)
        if opened:
            close = script.find(_CLOSERS[opened.group()], i + 2)
            close = n if close < 0 else close
            expression = script[i + 2 : close]
            if opened.group() == "{{" and "shell_quote" in expression and stack[-1] == "double":
                found.append((line, "inside double quotes"))
            line += script.count("\n", i, close)
            i = close + 2
            continue
        ch = script[i]
        state = stack[-1]
        if ch == "\n":
            line += 1
            at_line_start = True
            if state == "code" and heredocs and in_heredoc is None:
                in_heredoc = heredocs.pop(0)
            i += 1
            continue
        if state == "single":
            if ch == "'":
                stack.pop()
        elif ch == "\\":
            i += 1  # the next character is taken literally
        elif state == "double":
            if ch == '"':
                stack.pop()
            elif script.startswith("$(", i):
                stack.append("subst")
                i += 1
            elif ch == "`":
                stack.append("backtick")
        else:  # code, subst, backtick: the shell reads quotes here
            if ch == "'":
                stack.append("single")
            elif ch == '"':
                stack.append("double")
            elif script.startswith("$(", i):
                stack.append("subst")
                i += 1
            elif ch == ")" and state == "subst":
                stack.pop()
            elif ch == "`":
                if state == "backtick":
                    stack.pop()
                else:
                    stack.append("backtick")
            elif ch == "#" and (i == 0 or script[i - 1] in " \t\n;"):
                end = script.find("\n", i)
                i = n if end < 0 else end
                continue
            elif ch == "<" and (match := _HEREDOC.match(script, i)):
                quoted = (
                    match.group(2) is not None or match.group(3) is not None or match.group(0).count("\\")
                )
                delimiter = match.group(2) or match.group(3) or match.group(4) or ""
                heredocs.append((delimiter, bool(match.group(1)), not quoted))
                i = match.end()
                continue
        i += 1
    return found
