"""Step types: each says which config fields are templates (checked at load) and how it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from innominatus.workflows.definition import DefinitionError, Step
from innominatus.workflows.policy import StepResult, run_policy

LogLine = Callable[[str, str], Awaitable[None] | None]


class StepType(Protocol):
    def template_fields(self, config: dict[str, Any], where: str) -> list[tuple[str, bool]]:
        """Validate `config`; return (key, is_shell_script) for every field that is a template."""
        ...

    async def run(
        self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None
    ) -> StepResult: ...


class PolicyStep:
    """`policy`: a bash script, rendered with shell-safe templates, run in a fresh temp dir."""

    def template_fields(self, config: dict[str, Any], where: str) -> list[tuple[str, bool]]:
        script = config.get("script")
        if script is None:
            raise DefinitionError(f"{where}.script: is required")
        if not isinstance(script, str):
            raise DefinitionError(f"{where}.script: must be a string")
        return [("script", True)]

    async def run(self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None) -> StepResult:
        script = step.templates["script"].render(context)
        return await run_policy(script, timeout=step.timeout, on_log_line=on_log_line)


STEP_TYPES: dict[str, StepType] = {"policy": PolicyStep()}
