"""Step types: each checks its config at load (with the platform's settings, never a spec's), says
which config fields are templates, and runs a step. The registry is at the end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from innominatus.workflows.definition import DefinitionError, Step
from innominatus.workflows.host import current_host
from innominatus.workflows.policy import RUN_MARKER, StepResult, run_policy

if TYPE_CHECKING:
    from innominatus.admin_config import AdminConfig

LogLine = Callable[[str, str], Awaitable[None] | None]


class StepType(Protocol):
    def template_fields(
        self, config: dict[str, Any], where: str, platform: AdminConfig
    ) -> list[tuple[str, bool]]:
        """Validate `config`; return (key, is_shell_script) for every field that is a template."""
        ...

    async def run(
        self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None, platform: AdminConfig
    ) -> StepResult: ...


class StepLog:
    """The log of a step that is not a script: lines kept for the record and streamed as they come."""

    def __init__(self, on_log_line: LogLine | None) -> None:
        self.lines: list[str] = []
        self._on_log_line = on_log_line

    async def say(self, line: str) -> None:
        self.lines.append(line)
        if self._on_log_line is not None:
            result = self._on_log_line("stdout", line)
            if result is not None:
                await result

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


def require_str(config: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = config.get(key)
    if value is None:
        if required:
            raise DefinitionError(f"{where}.{key}: is required")
        return None
    if not isinstance(value, str):
        raise DefinitionError(f"{where}.{key}: must be a string")
    return value


class PolicyStep:
    """`policy`: a bash script, rendered with shell-safe templates, run in a fresh temp dir."""

    def template_fields(
        self, config: dict[str, Any], where: str, platform: AdminConfig
    ) -> list[tuple[str, bool]]:
        require_str(config, "script", where)
        return [("script", True)]

    async def run(
        self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None, platform: AdminConfig
    ) -> StepResult:
        script = step.templates["script"].render(context)
        run_id = (context.get("workflow") or {}).get("id") or ""
        env = {RUN_MARKER: run_id} if run_id else None
        step_host = current_host.get()  # the engine's; a step run outside one runs here
        run = run_policy if step_host is None else step_host.run_policy
        return await run(script, timeout=step.timeout, env=env, on_log_line=on_log_line)


def _registry() -> dict[str, StepType]:
    from innominatus.workflows.kubernetes import KubernetesStep
    from innominatus.workflows.postgres import PostgresStep

    return {"policy": PolicyStep(), "postgres": PostgresStep(), "kubernetes": KubernetesStep()}


STEP_TYPES: dict[str, StepType] = _registry()
