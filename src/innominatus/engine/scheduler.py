"""The engine's scheduling: when to claim (woken by published events, by a finished run, by the lease
expiry it knows of, and by a slow sweep), how many runs at once, lease renewal, and cancelling a run
whose resource is being deleted or whose lease is no longer ours."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from innominatus import logs
from innominatus.config import CONCURRENCY
from innominatus.db import clock
from innominatus.db.models import Resource, WorkflowExecution, utcnow
from innominatus.engine.claims import ANY_CLAIMABLE, Claim, Claimer
from innominatus.engine.recorder import StepRecorder
from innominatus.engine.run import run_claim
from innominatus.events import StateEvent
from innominatus.providers import Catalog
from innominatus.states import Operation, ResourceState, WorkflowStatus
from innominatus.store import Store
from innominatus.workflows.host import StepHost, current_host

if TYPE_CHECKING:
    from innominatus.metrics import Metrics

log = logging.getLogger(__name__)

# Events after which REQUESTED resources may be claimable: new ones, or a dependency now ACTIVE.
_REQUESTED_WORK = frozenset({ResourceState.REQUESTED, ResourceState.ACTIVE})
# Events after which an unleased execution may wait: update/delete/retry started by the API, or a
# dependent now DELETED (deletes run dependents first).
_RUN_WORK = frozenset({ResourceState.UPDATING, ResourceState.DELETING, ResourceState.DELETED})
# States a resource has while an engine holds its run's lease.
_LEASED = frozenset({ResourceState.PROVISIONING, ResourceState.UPDATING, ResourceState.DELETING})
# A run another transaction kept from a claim pass (SKIP LOCKED) is looked at again this much later.
RELOOK_SECONDS = 0.05


class Engine:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        concurrency: int = CONCURRENCY,
        sweep_interval: float = 30.0,
        lease_seconds: float = 15.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.concurrency = concurrency
        self.sweep_interval = sweep_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.metrics = metrics
        self.worker_id = store.replica  # the lease owner and the `runner` the API shows
        self.claimer = Claimer(store.box, store.dialect, self.worker_id, self.lease)
        self.claimer.grant = self._grant_pass_slots
        self._wake = asyncio.Event()
        # Work may be waiting that no free slot has taken yet (REQUESTED resources; unleased runs).
        self._requested_backlog = True
        self._runs_backlog = True
        self._next_expiry: float | None = None  # loop time when the earliest lease another engine holds ends
        self._renewed = time.monotonic()  # the last time our leases were renewed (or we held none)
        self._running: dict[str, asyncio.Task[None]] = {}  # execution id → task
        self._reserved = 0  # slots held by claims not yet started: a submission's, a pass's
        self._pass_reserved = 0  # of them, the running claim pass's
        self._by_resource: dict[str, tuple[str, str]] = {}  # resource id → (execution id, operation)
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[set[str]] | None = None
        self.step_host = StepHost()  # runs the policy steps of this engine's runs (workflows/host.py)

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.store.hub.add_listener(self._on_event)
        self._wake.set()
        self._loop_task = asyncio.create_task(self._loop(), name="innominatus-engine")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="innominatus-leases")

    async def stop(self) -> None:
        tasks = [
            t
            for t in (self._loop_task, self._heartbeat_task, self._renewing, *self._running.values())
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.step_host.close()
        # Interrupted runs resume at once in the next engine instead of waiting out the lease.
        with contextlib.suppress(Exception):
            async with self.store.transaction() as session:
                await session.execute(
                    update(WorkflowExecution)
                    .where(
                        WorkflowExecution.lease_owner == self.worker_id,
                        WorkflowExecution.status == WorkflowStatus.RUNNING,
                    )
                    .values(lease_expires_at=clock.now(self.store.dialect))
                )

    def _on_event(self, event: StateEvent) -> None:
        to_state = event.to_state
        claimed = event.resource is not None and event.resource.state != ResourceState.REQUESTED
        if to_state == ResourceState.REQUESTED and claimed:
            pass  # its submission claimed it already: nothing for a claim pass
        elif to_state == ResourceState.ACTIVE and not event.released:
            pass  # nothing waited for it (the numbering said so)
        elif to_state in _REQUESTED_WORK:
            self._requested_backlog = True
            self._wake.set()
        if to_state in _RUN_WORK or (
            to_state == ResourceState.PROVISIONING and event.from_state == ResourceState.FAILED
        ):
            self._runs_backlog = True  # FAILED → PROVISIONING: a retry's run waits for an engine
            self._wake.set()
        if to_state == ResourceState.DELETING:
            self._cancel_local(event.resource_id)
        if event.foreign and to_state in _LEASED and self._next_expiry is None:
            # Another replica took a run: learn when its lease ends, to resume the run if that replica dies.
            self._runs_backlog = True
            self._wake.set()

    def cancel_run(self, execution_id: str, why: str = "was cancelled") -> None:
        """Stop a run if it runs here (cancelled by any replica, taken over, or its lease is lost)."""
        task = self._running.get(execution_id)
        if task is not None and not task.done():
            log.info("execution %s %s; stopping it here", execution_id, why)
            task.cancel()

    def _cancel_local(self, resource_id: str) -> None:
        running = self._by_resource.get(resource_id)
        if running is not None and running[1] != Operation.DELETE:
            self.cancel_run(running[0], "belongs to a resource being deleted")

    async def _loop(self) -> None:
        while True:
            timeout = self.sweep_interval
            if self._next_expiry is not None:
                loop_now = asyncio.get_running_loop().time()
                timeout = min(timeout, max(0.05, self._next_expiry - loop_now + 0.05))
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                # The sweep, or a lease another engine held ran out: look even without a wake-up.
                self._requested_backlog = self._runs_backlog = True
            self._wake.clear()
            try:
                await self._claim_and_start()
            except Exception:
                log.exception("claiming work failed; trying again in a second")
                await asyncio.sleep(1)
                self._requested_backlog = self._runs_backlog = True
                self._wake.set()

    async def _heartbeat(self) -> None:
        """Renew our leases; a run whose row says it is no longer ours (cancelled, taken over) is stopped.
        When the leases cannot be renewed (cut off from the database, or it stopped answering), every run
        here is stopped shortly before its lease could run out, so that no other replica resumes a run
        this one still executes (its writes would be refused by the fencing token, a step's effects not)."""
        interval = max(self.lease.total_seconds() / 3, 0.1)
        margin = min(interval, 1.0)
        pause = interval
        while True:
            await asyncio.sleep(pause)
            pause = interval
            if not self._running:
                self._renewed = time.monotonic()
                continue
            deadline = self._renewed + self.lease.total_seconds() - margin
            started = time.monotonic()  # the database counts the renewed lease from about now
            try:
                lost = await self._renew(max(deadline - started, 0.05))
            except Exception:
                if time.monotonic() < deadline:
                    log.exception("renewing leases failed; trying again")
                    pause = min(interval, max(deadline - time.monotonic(), 0.05))
                    continue
                log.exception("leases not renewed in time; stopping this replica's runs")
                lost = set(self._running)
            else:
                self._renewed = started
            for execution_id in lost:
                self.cancel_run(execution_id, "was cancelled or taken over")

    async def _renew(self, within: float) -> set[str]:
        """One renewal, given up on after `within` seconds: a database that stopped answering (a
        partition drops packets, it refuses nothing) must not hold the heartbeat past the leases. A
        renewal still hanging from before is waited for, not doubled."""
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_once(set(self._running)))
        renewing = self._renewing
        done, _ = await asyncio.wait([renewing], timeout=within)
        if not done:
            raise TimeoutError(f"renewing leases took over {within:.1f}s")
        return renewing.result()

    async def _renew_once(self, running: set[str]) -> set[str]:
        async with self.store.transaction() as session:
            return await self.claimer.renew(session, running)

    # ------------------------------------------------------------------------- claims in a submission

    async def claim_created(self, session: AsyncSession, created: list[Resource]) -> list[Claim]:
        """Inside the transaction of a submission that created these resources: claim those that wait
        for nothing, as many as there are free slots, so their runs start the moment it commits instead
        of after a transaction of their own. If it does not commit, the claims never were."""
        free = self.concurrency - len(self._running) - self._reserved
        ready = [r for r in created if not r.depends_on][: max(free, 0)]
        if not ready:
            return []
        self._reserved += len(ready)
        claims: list[Claim] = []

        def ended(committed: bool) -> None:
            if committed:
                # A turn later: the commit's numbering goes out to the database first, and runs
                # while the step's process is spawned.
                asyncio.get_running_loop().call_soon(self._adopt, len(ready), claims)
            else:
                self._reserved -= len(ready)

        Store.on_end(session, ended)
        claims += await self.claimer.start(session, self.catalog, ready)
        return claims

    def _adopt(self, reserved: int, claims: list[Claim]) -> None:
        self._reserved -= reserved
        self._start(claims)

    # ---------------------------------------------------------------------------------- claim passes

    async def _claim_and_start(self) -> None:
        free = self.concurrency - len(self._running) - self._reserved
        if free <= 0 or not (self._requested_backlog or self._runs_backlog):
            return  # a finishing run wakes the loop again while there is a backlog
        await self._claim(free)

    @property
    def running_count(self) -> int:
        return len(self._running)

    def _start(self, claims: list[Claim]) -> None:
        now = utcnow()
        for claim in claims:
            if self.metrics is not None and claim.requested_at is not None:
                self.metrics.claim_lag.observe(max((now - claim.requested_at).total_seconds(), 0.0))
            earlier = self._running.get(self._by_resource.get(claim.resource_id, ("", ""))[0])
            task = asyncio.create_task(self._run(claim, earlier), name=f"workflow-{claim.execution_id}")
            self._running[claim.execution_id] = task
            self._by_resource[claim.resource_id] = (claim.execution_id, claim.operation)
            task.add_done_callback(lambda t, c=claim: self._finished(c))

    async def _claim(self, limit: int) -> None:
        """One transaction, whose runs start the moment it commits: its events' numbering and
        publication (a round trip, perhaps behind another pass) need not hold up the steps. Backlog
        flags are cleared only for what this pass looked at in full."""
        running = set(self._running)
        claims: list[Claim] = []
        if self._requested_backlog and not self._runs_backlog:
            # Most wake-ups (an ACTIVE that released nobody, a submit another pass already took) find
            # nothing: a one-row read says so without a transaction (nor SQLite's write lock).
            self._requested_backlog = False
            if not await self.store.rows(ANY_CLAIMABLE):
                return
            self._requested_backlog = True
        looked_at_requested = self._requested_backlog

        def ended(committed: bool) -> None:
            self._release_pass_slots()
            if committed:
                self._start(claims)

        try:
            async with self.store.transaction() as session:
                Store.on_end(session, ended)
                if self._requested_backlog:
                    self._requested_backlog = False
                    claims += await self.claimer.requested(session, self.catalog, limit)
                    if self.claimer.batch_full:
                        self._requested_backlog = True  # there may be more waiting
                looked_at_runs = self._runs_backlog and len(claims) < limit
                if looked_at_runs:
                    self._runs_backlog = False
                    more = await self.claimer.runs(session, self.catalog, limit - len(claims), running)
                    if len(more) == limit - len(claims) or self.claimer.runs_trimmed:
                        self._runs_backlog = True
                    claims += more
                    seconds = await self.claimer.next_expiry(session)
                    loop_now = asyncio.get_running_loop().time()
                    self._next_expiry = None if seconds is None else loop_now + seconds
        finally:
            self._release_pass_slots()  # (already done when the transaction ended)
        if self.claimer.postgres:
            await self._relook_skipped(
                looked_at_requested and not self._requested_backlog,
                looked_at_runs and not self._runs_backlog,
                running,
            )
        if self.claimer.parked:
            async with self.store.transaction() as session:
                if await self.claimer.recheck_parked(session):
                    self._requested_backlog = True
        if self._requested_backlog or self._runs_backlog:
            self._wake.set()

    async def _relook_skipped(self, requested: bool, runs: bool, running: set[str]) -> None:
        """PostgreSQL: a pass skips rows another transaction holds (SKIP LOCKED; a refused update or
        retry holds its resource for a moment), and nothing else will announce the work they stand for.
        After a pass that cleared a backlog flag, a one-row read asks whether such work is left; if so,
        the engine looks again shortly. (Every row the pass saw is claimed or parked by now.)"""
        requested = requested and bool(await self.store.rows(ANY_CLAIMABLE))
        if runs:
            unseen = self.claimer.runs_unseen(self.claimer.runs_seen | running)
            runs = bool(await self.store.rows(unseen))
        if requested or runs:
            asyncio.get_running_loop().call_later(RELOOK_SECONDS, self._relook, requested, runs)

    def _grant_pass_slots(self, wanted: int) -> int:
        """Free slots for the rows a pass just read, reserved with no await between the count and the
        reservation: submissions claim their own resources meanwhile, and both used to fill the same
        free slots (4 runs with 3 allowed). Held until the pass's runs start."""
        granted = max(min(wanted, self.concurrency - len(self._running) - self._reserved), 0)
        self._reserved += granted
        self._pass_reserved += granted
        return granted

    def _release_pass_slots(self) -> None:
        self._reserved -= self._pass_reserved
        self._pass_reserved = 0

    def _relook(self, requested: bool, runs: bool) -> None:
        self._requested_backlog |= requested
        self._runs_backlog |= runs
        self._wake.set()

    def _finished(self, claim: Claim) -> None:
        self._running.pop(claim.execution_id, None)
        if self._by_resource.get(claim.resource_id, ("",))[0] == claim.execution_id:
            del self._by_resource[claim.resource_id]
        if self._requested_backlog or self._runs_backlog:
            self._wake.set()

    async def _run(self, claim: Claim, earlier: asyncio.Task[None] | None) -> None:
        if earlier is not None:
            # A cancelled run of the same resource: its process group is gone before this one starts.
            await asyncio.wait([earlier])
        logs.bind(
            application=claim.app["name"], resource_id=claim.resource_id, workflow_id=claim.execution_id
        )
        recorder = StepRecorder(self.store, claim, self.worker_id, self.metrics)
        current_host.set(self.step_host)  # this run's own context (a task of its own)
        started = time.monotonic()
        status = WorkflowStatus.CANCELLED
        try:
            await run_claim(claim, recorder, self.catalog.platform)
            status = recorder.outcome or WorkflowStatus.CANCELLED
        finally:
            seconds = time.monotonic() - started
            log.info("%s workflow %s %s in %.2fs", claim.operation, claim.workflow.name, status, seconds)
            if self.metrics is not None:
                self.metrics.runs.labels(operation=claim.operation, status=status).inc()
                self.metrics.run_seconds.labels(operation=claim.operation).observe(seconds)
