"""The step host (workflows/host.py): policy steps run in a process of their own, with real bash, and
behave exactly as they do in the server's process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from innominatus import specs
from innominatus.providers import load_catalog
from innominatus.store import Store
from innominatus.workflows.host import StepHost
from innominatus.workflows.policy import StepResult, run_policy
from tests.conftest import ProviderFactory, workflow_yaml
from tests.integration.helpers import resources, running_engine, settle
from tests.processes import alive, process_gone
from tests.unit.test_policy import _WHERE, _dirs, child_pid

SCRIPTS = {
    "json outputs": 'echo starting\necho \'{"host": "db", "port": 5432}\'\necho >&2 "a warning"',
    "output file": 'echo "user=alice" >> "$INNOMINATUS_OUTPUT"\necho \'{"user": "bob", "x": 1}\'',
    "exit code and stderr": 'echo out\necho >&2 "it broke"\nexit 3',
    "signal": "kill -TERM $$",
    "bad output file": 'echo "no equals sign" >> "$INNOMINATUS_OUTPUT"',
    "unicode": "echo 'größe → ✓'\necho '{\"name\": \"café\"}'",
    "environment": 'echo "{\\"mine\\": \\"$MINE\\", \\"cwd_empty\\": \\"$(ls -A | wc -l)\\"}"',
    "timeout": "echo before\nsleep 5\necho after",
}


@pytest.fixture
async def host() -> AsyncIterator[StepHost]:
    step_host = StepHost()
    try:
        yield step_host
    finally:
        await step_host.close()


async def holding_step(host: StepHost) -> tuple[asyncio.Task[StepResult], int]:
    """A step that runs until stopped, and the pid of the background child it started."""
    started = asyncio.Event()
    lines: list[str] = []

    def on_line(stream: str, line: str) -> None:
        lines.append(line)
        started.set()

    task = asyncio.create_task(
        host.run_policy("sleep 1000 &\necho child=$!\nwait\n", timeout=60, on_log_line=on_line)
    )
    await asyncio.wait_for(started.wait(), 10)
    return task, child_pid("\n".join(lines))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_a_step_in_the_host_gives_what_it_gives_in_process(host: StepHost, name: str) -> None:
    script, env = SCRIPTS[name], {"MINE": "value; $(rm -rf /) 'quoted'"}
    timeout = 0.5 if name == "timeout" else 30
    here = await run_policy(script, timeout=timeout, env=env)
    there = await host.run_policy(script, timeout=timeout, env=env)
    assert (there.succeeded, there.outputs, there.error, there.logs) == (
        here.succeeded,
        here.outputs,
        here.error,
        here.logs,
    )
    assert host.pid is not None and host.pid != os.getpid()


async def test_lines_arrive_in_order_while_the_script_runs(host: StepHost) -> None:
    seen: list[tuple[float, str, str]] = []

    async def on_line(stream: str, line: str) -> None:  # an async handler, as the engine's is
        seen.append((time.monotonic(), stream, line))

    script = "for i in 1 2 3; do echo line-$i; done\necho >&2 problem\nsleep 0.5\necho last"
    result = await host.run_policy(script, timeout=10, on_log_line=on_line)
    ended = time.monotonic()
    assert [(s, line) for _, s, line in seen] == [
        ("stdout", "line-1"),
        ("stdout", "line-2"),
        ("stdout", "line-3"),
        ("stderr", "problem"),
        ("stdout", "last"),
    ]
    assert ended - seen[0][0] >= 0.4  # the first lines came while the script still ran
    assert result.succeeded and result.logs.splitlines()[-1] == "last"


async def test_a_failing_line_handler_does_not_stop_the_step(host: StepHost) -> None:
    def on_line(stream: str, line: str) -> None:
        raise RuntimeError("handler broke")

    result = await host.run_policy("echo a\necho '{\"ok\": true}'", timeout=10, on_log_line=on_line)
    assert result.succeeded and result.outputs == {"ok": True}


async def test_a_cancelled_step_returns_once_its_processes_are_gone(host: StepHost) -> None:
    task, child = await holding_step(host)
    assert alive(child)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_gone(child)  # gone when the cancellation completed, not eventually
    after = await host.run_policy("echo '{\"again\": 1}'", timeout=10)  # the host still serves
    assert after.outputs == {"again": 1}


async def test_many_steps_at_once_in_one_host(host: StepHost) -> None:
    results = await asyncio.gather(
        *(host.run_policy(f'echo \'{{"i": {i}}}\'\necho "cwd=$PWD"', timeout=30) for i in range(40))
    )
    assert [r.outputs for r in results] == [{"i": i} for i in range(40)]
    assert len({r.logs.splitlines()[-1] for r in results}) == 40  # each step in a directory of its own


async def test_a_dead_host_fails_its_steps_kills_their_processes_and_is_replaced(host: StepHost) -> None:
    task, child = await holding_step(host)
    first = host.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    result = await asyncio.wait_for(task, 10)
    assert not result.succeeded
    assert result.error is not None and "step host process ended" in result.error
    assert "-9" in result.error  # the exit code says how it ended
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert process_gone(child)
    again = await host.run_policy("echo '{\"fresh\": true}'", timeout=10)
    assert again.outputs == {"fresh": True}
    assert host.pid not in (None, first)


async def test_a_new_host_removes_the_directories_a_killed_one_left(host: StepHost) -> None:
    started = asyncio.Event()
    lines: list[str] = []

    def on_line(stream: str, line: str) -> None:
        lines.append(line)
        if line.startswith("own="):
            started.set()

    task = asyncio.create_task(host.run_policy(_WHERE + "sleep 1000\n", timeout=60, on_log_line=on_line))
    await asyncio.wait_for(started.wait(), 10)
    left = list(_dirs("\n".join(lines)))
    os.kill(host.pid or 0, signal.SIGKILL)
    await asyncio.wait_for(task, 10)
    assert all(d.is_dir() for d in left)  # nothing removed them: the process that would have is gone
    assert (await host.run_policy("true", timeout=10)).succeeded  # a new host
    deadline = time.monotonic() + 10
    while any(d.exists() for d in left) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(d.exists() for d in left)


async def test_closing_the_host_kills_what_runs_and_refuses_more(host: StepHost) -> None:
    task, child = await holding_step(host)
    pid = host.pid
    assert pid is not None
    await host.close()
    assert process_gone(pid) and process_gone(child)
    assert not (await asyncio.wait_for(task, 10)).succeeded
    refused = await host.run_policy("echo hi", timeout=10)
    assert not refused.succeeded and "stopped" in (refused.error or "")


SCRIPT_REPORTING_ITS_PARENT = r"""printf '{"parent": "%s", "run": "%s"}\n' "$PPID" "$INNOMINATUS_RUN"
printf 'parent_command=%s\n' "$(tr '\0' ' ' < /proc/$PPID/cmdline)" >> "$INNOMINATUS_OUTPUT"
"""


async def test_the_engine_runs_policy_steps_in_its_host(store: Store, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: where\n  type: policy\n  config:\n    script: |\n"
        + "".join(f"      {line}\n" for line in SCRIPT_REPORTING_ITS_PARENT.splitlines()),
        outputs="".join(
            f'{key}: "{{{{ steps.where.outputs.{key} }}}}"\n' for key in ("parent", "run", "parent_command")
        ),
    )
    catalog = load_catalog(make_provider({"provision-test": wf}), None)
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: where-app\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  database:\n    type: test-db\n"
    )
    async with running_engine(store, catalog) as engine:
        await specs.submit(store, catalog, spec)
        await settle(store, "where-app")
        host_pid = engine.step_host.pid
    [db] = await resources(store, "where-app")
    assert db.state == "ACTIVE", db.error_message
    assert host_pid is not None and int(db.outputs["parent"]) == host_pid != os.getpid()
    assert "innominatus.workflows.host" in db.outputs["parent_command"]
    assert db.outputs["run"] == db.workflow_execution_id
    assert process_gone(host_pid)  # the engine's stop ended its host


def test_the_host_is_not_a_command_to_run_by_hand(tmp_path: Path) -> None:
    with (tmp_path / "out").open("wb") as out:
        ran = subprocess.run(
            [sys.executable, "-m", "innominatus.workflows.host"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert ran.returncode == 1
    assert "started by the server's engine, on pipes" in ran.stderr


def test_the_host_ends_when_its_input_closes() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "innominatus.workflows.host"], input=b"", capture_output=True, timeout=30
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, b"", b"")


# A stand-in host: it reads one step, starts a process group for it (as the real host does) and says
# so, then answers with what the protocol does not allow, and stays (the server must end it).
_WRONG_HOST = r"""
import json, os, subprocess, sys, time
requests = sys.stdin.buffer
size = int.from_bytes(requests.read(4), "big")
step = json.loads(requests.read(size))["run"]
child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
open(sys.argv[2], "w").write(str(child.pid))

def send(data):
    sys.stdout.buffer.write(len(data).to_bytes(4, "big") + data)
    sys.stdout.buffer.flush()

send(json.dumps({"id": step, "group": child.pid}).encode())
wrong = {
    "not json": b"{oops",
    "no id": json.dumps({"result": [True, "", {}, None]}).encode(),
    "a result of the wrong shape": json.dumps({"id": step, "result": [True]}).encode(),
}.get(sys.argv[1])
if wrong is None:  # a frame longer than any the server accepts
    sys.stdout.buffer.write((2**31).to_bytes(4, "big"))
    sys.stdout.buffer.flush()
else:
    send(wrong)
time.sleep(1000)
"""


@pytest.mark.parametrize("wrong", ["not json", "no id", "a result of the wrong shape", "too large"])
async def test_a_host_that_breaks_the_protocol_is_ended_and_its_steps_fail(
    wrong: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program, child_file = tmp_path / "wrong_host.py", tmp_path / "child"
    program.write_text(_WRONG_HOST)
    wrong_host = StepHost(command=(sys.executable, str(program), wrong, str(child_file)))
    try:
        result = await asyncio.wait_for(wrong_host.run_policy("true", timeout=10), 10)
        pid = wrong_host.pid
    finally:
        await wrong_host.close()
    assert not result.succeeded
    assert result.error is not None
    assert result.error.startswith("the step host process ended (exit code -9) while the step ran")
    assert pid is None  # the host it started is gone
    child = int(child_file.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert process_gone(child)  # the group the host announced was killed
    assert "the step host sent what it should not" in caplog.text
