"""Runs one workflow definition: binds parameters, runs steps in order, renders the outputs.

It knows nothing of the database; the engine persists what the hooks report.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from innominatus.admin_config import AdminConfig
from innominatus.workflows.definition import MAX_RETRY_DELAY, Step, WorkflowDefinition, value_has_type
from innominatus.workflows.policy import StepResult
from innominatus.workflows.steps import STEP_TYPES
from innominatus.workflows.templates import RenderError


class ParameterError(ValueError):
    pass


def bind_parameters(definition: WorkflowDefinition, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Every input stays visible; declared parameters get their defaults, required and type checks."""
    bound = dict(inputs)
    for param in definition.parameters:
        value = bound.get(param.name)
        if value is None:
            if param.has_default:
                bound[param.name] = copy.deepcopy(param.default)  # runs never share a default
                continue
            if param.required:
                raise ParameterError(f"parameter '{param.name}' is required by workflow '{definition.name}'")
            continue
        if not value_has_type(param.type, value):
            raise ParameterError(
                f"parameter '{param.name}' must be of type {param.type}, got {type(value).__name__} {value!r}"
            )
    return bound


@dataclass
class RunContext:
    parameters: dict[str, Any]
    app: dict[str, Any]
    resource: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_id: str = ""  # the execution's id: marks its processes, so a resumed run can find strays

    def template_context(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "app": self.app,
            "resource": self.resource,
            "steps": self.steps,
            "workflow": {"id": self.run_id},
        }


class StepHooks(Protocol):
    async def attempt_started(self, index: int, step: Step) -> int:
        """Record a new attempt of the step; returns its number (1 for the first ever)."""
        ...

    async def attempt_finished(
        self, index: int, step: Step, attempt: int, result: StepResult, final: bool
    ) -> None: ...

    async def log_line(self, index: int, stream: str, line: str) -> None: ...


@dataclass
class RunOutcome:
    succeeded: bool
    failed_step: str | None = None
    error: str | None = None


async def run_steps(
    definition: WorkflowDefinition,
    ctx: RunContext,
    hooks: StepHooks,
    start_at: int = 0,
    platform: AdminConfig | None = None,
) -> RunOutcome:
    """Run the steps from `start_at`; earlier steps' outputs must already be in ctx.steps."""
    for index, step in enumerate(definition.steps):
        if index < start_at:
            continue
        result = await _run_with_retries(index, step, ctx, hooks, platform or AdminConfig.default())
        if not result.succeeded:
            return RunOutcome(False, step.name, f"step '{step.name}' failed: {result.error}")
        ctx.steps[step.name] = {"outputs": result.outputs}
    return RunOutcome(True)


async def _run_with_retries(
    index: int, step: Step, ctx: RunContext, hooks: StepHooks, platform: AdminConfig
) -> StepResult:
    delay = step.retry_delay
    for remaining in range(step.retries, -1, -1):
        attempt = await hooks.attempt_started(index, step)
        result = await _run_step(index, step, ctx, hooks, platform)
        final = result.succeeded or remaining == 0
        await hooks.attempt_finished(index, step, attempt, result, final)
        if final:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY)
    raise AssertionError("unreachable")


async def _run_step(
    index: int, step: Step, ctx: RunContext, hooks: StepHooks, platform: AdminConfig
) -> StepResult:
    async def on_line(stream: str, line: str) -> None:
        await hooks.log_line(index, stream, line)

    try:
        return await STEP_TYPES[step.type].run(step, ctx.template_context(), on_line, platform)
    except RenderError as exc:
        return StepResult(succeeded=False, logs="", outputs={}, error=str(exc))


def render_outputs(definition: WorkflowDefinition, ctx: RunContext) -> dict[str, str]:
    """Workflow outputs, rendered after the last step; always strings."""
    context = ctx.template_context()
    return {out.name: out.template.render(context) for out in definition.outputs}
