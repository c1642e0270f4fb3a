"""Running one claimed workflow: bind its parameters, resume after the steps that already succeeded,
run the rest (under the workflow's deadline), render its outputs, and have the recorder store the end."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from innominatus.admin_config import AdminConfig
from innominatus.db.models import utcnow
from innominatus.engine.claims import Claim
from innominatus.engine.recorder import LeaseLost, StepRecorder
from innominatus.states import StepStatus
from innominatus.workflows.policy import kill_strays
from innominatus.workflows.runner import (
    ParameterError,
    RunContext,
    bind_parameters,
    render_outputs,
    run_steps,
)
from innominatus.workflows.templates import RenderError

log = logging.getLogger(__name__)


async def run_claim(claim: Claim, recorder: StepRecorder, platform: AdminConfig) -> None:
    try:
        outputs, error = await _execute(claim, recorder, platform)
    except asyncio.CancelledError:
        raise  # cancelled (resource deleted, or shutdown): the row says what happened
    except LeaseLost as exc:
        log.warning("%s: stopping the run here; its new owner's record stands", exc)
        return
    except Exception as exc:
        log.exception("workflow %s for resource %s crashed", claim.execution_id, claim.resource_id)
        outputs, error = None, f"internal error: {type(exc).__name__}: {exc}"
    await recorder.finish(outputs=outputs, error=error)


async def _execute(
    claim: Claim, recorder: StepRecorder, platform: AdminConfig
) -> tuple[dict[str, str] | None, str | None]:
    definition = claim.workflow.definition
    try:
        parameters = bind_parameters(definition, claim.inputs)
    except ParameterError as exc:
        return None, f"workflow '{definition.name}': {exc}"
    ctx = RunContext(parameters=parameters, app=claim.app, resource=claim.resource, run_id=claim.execution_id)
    start_at = 0
    for index, row in enumerate(claim.steps):
        if row["status"] != StepStatus.SUCCEEDED:
            break
        ctx.steps[definition.steps[index].name] = {"outputs": row["outputs"]}
        start_at = index + 1
    if start_at < len(claim.steps) and claim.steps[start_at]["status"] == StepStatus.RUNNING:
        # Interrupted: whatever the dead engine left running of it goes first.
        strays = await asyncio.to_thread(kill_strays, claim.execution_id)
        if strays:
            log.info("killed %d leftover process group(s) of execution %s", len(strays), claim.execution_id)
        step = definition.steps[start_at]
        if not step.idempotent:
            return None, f"step '{step.name}' failed: interrupted, not safe to re-run"
    try:
        async with asyncio.timeout_at(_loop_deadline(claim.deadline)):
            outcome = await run_steps(definition, ctx, recorder, start_at=start_at, platform=platform)
    except TimeoutError:
        return None, f"workflow '{definition.name}' timed out after {definition.timeout:g}s"
    if not outcome.succeeded:
        return None, outcome.error
    try:
        return render_outputs(definition, ctx), None
    except RenderError as exc:
        return None, f"workflow '{definition.name}' outputs: {exc}"


def _loop_deadline(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - utcnow()).total_seconds()
