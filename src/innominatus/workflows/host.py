"""The step host: a process of its own that runs the engine's policy steps (workflows/policy.py).

Why: starting bash and reading its pipes is a fifth of the server's CPU per resource (asyncio's
subprocess machinery, fork and exec, the pipes, the step's directory), spent on the one event loop
that every request, event and transaction also needs. In the host that work runs beside the server, on
the other core; the server only sends a request and reads back the lines and the result. The host runs
the same `run_policy`, so a step behaves exactly as it would in the server.

Protocol, over the host's stdin (requests) and stdout (replies): frames of a 4-byte big-endian length
and a JSON object.

    {"run": id, "script": ..., "timeout": s, "env": {...} | null}
        → {"id": id, "group": pgid}                       the script's process group, once started
        → {"id": id, "line": [stream, text]} ...          as the script prints
        → {"id": id, "result": [succeeded, logs, outputs, error]}
    {"cancel": id}
        → {"id": id, "cancelled": true}                   once its process group is gone

The host ends when its stdin closes, killing what still runs. If it dies, the server kills the process
groups it was told of, fails the steps that ran in it (saying so) and starts a new host for the next
step. Lines go out as the script prints them, no faster than the server reads them (the host waits for
its pipe to drain, and so stops reading the script's output), so nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import stat
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from innominatus.workflows.policy import (
    LogLine,
    StepResult,
    pidfd_child_watcher,
    run_policy,
    sweep_stale_dirs,
)

log = logging.getLogger(__name__)

_MAX_FRAME = 64 * 1024 * 1024  # a result carries at most LOG_LIMIT characters of logs, and outputs
_CANCEL_WAIT = 10.0  # seconds for the host to confirm a cancelled step's group is gone
_STOP_WAIT = 10.0  # seconds for the host to end once told to

# The engine's host, for the runs it starts (each run is a task with its own context). Without one
# (a step run outside an engine), policy steps run in this process.
current_host: ContextVar[StepHost | None] = ContextVar("innominatus_step_host", default=None)


def _frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return len(data).to_bytes(4, "big") + data


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    size = int.from_bytes(await reader.readexactly(4), "big")
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {_MAX_FRAME}")
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


# ------------------------------------------------------------------------------------- the server side


class HostLost(RuntimeError):
    """The host ended while a step ran in it."""


@dataclass
class _Step:
    on_log_line: LogLine | None
    process: asyncio.subprocess.Process  # the host it was sent to
    done: asyncio.Future[StepResult | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    group: int | None = None


class StepHost:
    """The server's end: starts the host when a step first needs it (and again after it died), sends
    steps, and hands each its lines and result."""

    def __init__(self, command: Sequence[str] = (sys.executable, "-m", "innominatus.workflows.host")) -> None:
        self._command = tuple(command)  # (tests start stand-ins that speak the protocol wrongly)
        self._process: asyncio.subprocess.Process | None = None
        self._reading: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._steps: dict[int, _Step] = {}
        self._next = 0
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The host process now running, if any."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def run_policy(
        self,
        script: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the step's own limit, carried out by the host
        env: Mapping[str, str] | None = None,
        on_log_line: LogLine | None = None,
    ) -> StepResult:
        """As `policy.run_policy`, in the host. Cancelled, it returns once the script's group is gone."""
        try:
            process = await self._started()
        except HostLost as exc:
            return StepResult(False, "", {}, str(exc))
        self._next += 1
        number = self._next
        step = _Step(on_log_line, process)
        self._steps[number] = step
        try:
            assert process.stdin is not None
            process.stdin.write(
                _frame({"run": number, "script": script, "timeout": timeout, "env": dict(env or {})})
            )
            result = await asyncio.shield(step.done)
        except HostLost as exc:
            return StepResult(False, "", {}, str(exc))
        except asyncio.CancelledError:
            if not step.done.done() and process.returncode is None and process.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.write(_frame({"cancel": number}))
                with contextlib.suppress(TimeoutError, HostLost):
                    await asyncio.wait_for(asyncio.shield(step.done), _CANCEL_WAIT)
            raise
        finally:
            self._steps.pop(number, None)
        if result is None:  # only a step cancelled here has no result
            return StepResult(False, "", {}, "the step host cancelled the step")
        return result

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._closed:
                raise HostLost("the step host is stopped (the engine is stopping)")
            process = self._process
            if (
                process is None
                or process.returncode is not None
                or self._reading is None
                or self._reading.done()
            ):
                self._process = await asyncio.create_subprocess_exec(
                    *self._command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=_MAX_FRAME,
                )
                self._reading = asyncio.create_task(self._read(self._process), name="innominatus-step-host")
            return self._process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while True:
                message = await _read_frame(process.stdout)
                step = self._steps.get(message["id"])
                if step is None:
                    continue  # a step whose caller stopped waiting
                if "line" in message:
                    await _deliver(step.on_log_line, *message["line"])
                elif "group" in message:
                    step.group = message["group"]
                elif "result" in message and not step.done.done():
                    succeeded, logs, outputs, error = message["result"]
                    step.done.set_result(StepResult(succeeded, logs, outputs, error))
                elif "cancelled" in message and not step.done.done():
                    step.done.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self._lost(process, exc)
        except (ValueError, KeyError, TypeError) as exc:  # not the protocol: it cannot be trusted
            await self._lost(process, ValueError(f"the step host sent what it should not: {exc!r}"))

    async def _lost(self, process: asyncio.subprocess.Process, cause: Exception) -> None:
        """The host ended (or spoke nonsense): what it ran is killed, and those steps fail."""
        running = [s for s in self._steps.values() if s.process is process and not s.done.done()]
        # Its steps' groups first: a process of theirs that holds the host's pipes open would otherwise
        # keep asyncio waiting for the host's end for as long as it lives.
        for step in running:
            if step.group is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(step.group, signal.SIGKILL)
        # Output that ended means the host is ending: wait for it rather than kill it, since killing would
        # reap it first (Popen polls before it signals) and asyncio would report exit code 255.
        code = await _ended(process, within=0 if isinstance(cause, ValueError) else _STOP_WAIT)
        if running and not self._closed:
            log.error(
                "the step host ended (exit code %s) with %d steps running: %s", code, len(running), cause
            )
        for step in running:
            step.done.set_exception(
                HostLost(
                    f"the step host process ended (exit code {code}) while the step ran; "
                    "its processes were killed"
                )
            )

    async def close(self) -> None:
        """Stop the host: what still runs in it is killed. Steps sent afterwards fail."""
        async with self._starting:
            self._closed = True
            process, reading = self._process, self._reading
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        await _ended(process, within=_STOP_WAIT)
        if reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reading


async def _ended(process: asyncio.subprocess.Process, within: float) -> int:
    """The process's exit code, once it has ended by itself within `within` seconds, or been killed."""
    try:
        return await asyncio.wait_for(process.wait(), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()


async def _deliver(on_log_line: LogLine | None, stream: str, text: str) -> None:
    if on_log_line is None:
        return
    try:
        result = on_log_line(stream, text)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("handling a step's log line failed")


# ------------------------------------------------------------------------------------------ the host


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    running: dict[int, asyncio.Task[None]] = {}
    stopping = False

    async def send(message: dict[str, Any]) -> None:
        writer.write(_frame(message))
        await writer.drain()

    async def run(number: int, request: dict[str, Any]) -> None:
        async def line(stream: str, text: str) -> None:
            await send({"id": number, "line": [stream, text]})

        def group(pgid: int) -> None:
            writer.write(_frame({"id": number, "group": pgid}))

        try:
            result = await run_policy(
                request["script"],
                timeout=float(request["timeout"]),
                env=request.get("env") or None,
                on_log_line=line,
                on_group=group,
            )
        except asyncio.CancelledError:
            if not stopping:
                await send({"id": number, "cancelled": True})
                return
            result = StepResult(
                False, "", {}, "the step host stopped (the server is stopping); the step was killed"
            )
        except Exception as exc:  # the server gets a failed step, never a step that hangs
            result = StepResult(False, "", {}, f"the step host failed to run the step: {exc}")
        finally:
            running.pop(number, None)
        await send({"id": number, "result": [result.succeeded, result.logs, result.outputs, result.error]})

    try:
        while True:
            try:
                request = await _read_frame(reader)
            except asyncio.IncompleteReadError:
                return  # the server closed our stdin: stop
            if "run" in request:
                number = request["run"]
                running[number] = asyncio.create_task(run(number, request))
            elif "cancel" in request and (task := running.get(request["cancel"])) is not None:
                task.cancel()
    finally:
        stopping = True
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def _main() -> None:
    # The protocol gets private copies of stdin and stdout; fds 0 and 1 become /dev/null and stderr, so
    # nothing else can read a request or write into a reply.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(requests, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(replies, "wb", 0)
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    # A host starts when none runs: the last one may have been killed with its steps' directories left.
    sweeping = asyncio.create_task(asyncio.to_thread(_sweep))
    with pidfd_child_watcher():
        await _serve(reader, writer)
    await sweeping
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def _sweep() -> None:
    removed = sweep_stale_dirs()
    if removed:
        log.warning("removed %d step directories left by processes that are gone", removed)


def _piped(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


if __name__ == "__main__":
    if not (_piped(0) and _piped(1)):
        sys.exit("innominatus.workflows.host: started by the server's engine, on pipes; not a command to run")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the server, which stops us in order
    asyncio.run(_main())
