"""The policy step: real bash scripts, no mocks."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from innominatus.workflows import policy
from innominatus.workflows.policy import LOG_LIMIT, StepResult, pidfd_child_watcher, run_policy
from tests.processes import process_gone


def child_pid(logs: str) -> int:
    match = re.search(r"child=(\d+)", logs)
    assert match, logs
    return int(match.group(1))


async def test_json_output_from_indented_heredoc() -> None:
    script = """#!/bin/bash
set -e
DB_USER="demo_db_app"
echo '{"not": "this one"}'
cat <<EOF
    some text first
    {
      "username": "$DB_USER",
      "password": "x",
      "nested": {"port": 5432}
    }
EOF
echo done
"""
    result = await run_policy(script)
    assert result.succeeded, result.error
    assert result.outputs == {"username": "demo_db_app", "password": "x", "nested": {"port": 5432}}
    assert result.error is None
    assert result.logs.endswith("done\n")


async def test_no_json_means_no_outputs() -> None:
    result = await run_policy("echo 'hello {world'")
    assert result == StepResult(True, "hello {world\n", {}, None)


async def test_output_file_merges_and_wins() -> None:
    script = """
echo '{"username": "from-json", "password": "p"}'
{
  echo "# a comment"
  echo
  echo "username=from-file"
  echo "url=postgresql://u:p@h:5432/db?a=b"
} >> "$INNOMINATUS_OUTPUT"
"""
    result = await run_policy(script)
    assert result.succeeded, result.error
    assert result.outputs == {
        "username": "from-file",
        "password": "p",
        "url": "postgresql://u:p@h:5432/db?a=b",
    }


async def test_malformed_output_file_fails() -> None:
    script = 'echo "ok=1" > "$INNOMINATUS_OUTPUT"\necho "no equals sign" >> "$INNOMINATUS_OUTPUT"'
    result = await run_policy(script)
    assert not result.succeeded
    assert result.error is not None
    assert "INNOMINATUS_OUTPUT line 2" in result.error and "no equals sign" in result.error


async def test_non_zero_exit_reports_stderr_tail() -> None:
    script = 'for i in $(seq 1 15); do echo "err $i" >&2; done\necho out\nexit 3\n'
    result = await run_policy(script)
    assert not result.succeeded
    assert result.outputs == {}
    assert result.error is not None
    assert result.error.startswith("exit code 3: err 6\n")
    assert result.error.endswith("err 15")
    assert "err 5\n" not in result.error
    assert "out\n" in result.logs


async def test_non_zero_exit_without_stderr() -> None:
    result = await run_policy("exit 4")
    assert result.error == "exit code 4"


async def test_set_e_failure() -> None:
    result = await run_policy("set -e\nfalse\necho unreachable\n")
    assert result.error == "exit code 1"
    assert "unreachable" not in result.logs


async def test_timeout_kills_the_process_group() -> None:
    script = "sleep 1000 &\necho child=$!\necho waiting >&2\nsleep 1000\n"
    started = time.monotonic()
    result = await run_policy(script, timeout=1)
    assert time.monotonic() - started < 5
    assert not result.succeeded
    assert result.error == "timed out after 1s: waiting"
    pid = child_pid(result.logs)
    assert process_gone(pid)


async def test_sigterm_ignored_gets_sigkill() -> None:
    script = "trap '' TERM\nsleep 1000 &\necho child=$!\nsleep 1000\n"
    started = time.monotonic()
    result = await run_policy(script, timeout=0.5)
    assert time.monotonic() - started < 5
    assert result.error == "timed out after 0.5s"
    assert process_gone(child_pid(result.logs))


async def test_cancellation_kills_the_process_group() -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_line(stream: str, line: str) -> None:
        await seen.put(line)

    task = asyncio.create_task(run_policy("sleep 1000 &\necho child=$!\nwait\n", on_log_line=on_line))
    line = await asyncio.wait_for(seen.get(), 5)
    pid = child_pid(line)
    assert not process_gone(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process_gone(pid)


async def test_background_process_does_not_outlive_the_step() -> None:
    result = await run_policy("sleep 1000 &\necho child=$!\necho '{\"a\": 1}'\n", timeout=10)
    assert result.succeeded, result.error
    assert result.outputs == {"a": 1}
    assert process_gone(child_pid(result.logs))


def _dirs(logs: str) -> tuple[Path, Path]:
    """The step's working directory and the directory of its script and outputs file, as it printed."""
    cwd, own = re.search(r"cwd=(.*)", logs), re.search(r"own=(.*)", logs)
    assert cwd and own, logs
    return Path(cwd.group(1)), Path(own.group(1)).parent


_WHERE = 'echo "cwd=$PWD"\necho "own=$INNOMINATUS_OUTPUT"\n'


async def test_cwd_is_a_fresh_temp_dir_that_is_removed() -> None:
    script = (
        _WHERE + 'echo "entries=$(ls -A | wc -l)"\necho "tmp=$TMPDIR"\necho "script=$0"\ntouch leftover\n'
    )
    first = await run_policy(script)
    second = await run_policy(script)
    workdir, own = _dirs(first.logs)
    assert "entries=0" in first.logs  # the script and the outputs file are not in it
    assert f"tmp={workdir}" in first.logs
    assert f"script={own / 'script.sh'}" in first.logs
    assert workdir.parent == Path(tempfile.gettempdir())  # never in memory: it may grow large
    await policy.removed()  # a thread of its own removes them, right after the step
    assert not workdir.exists()
    assert not own.exists()  # the script file and output file went with it
    assert _dirs(second.logs)[0] != workdir and _dirs(second.logs)[1] != own


async def test_the_step_directory_goes_whatever_the_script_left_in_it() -> None:
    clean = _WHERE + 'echo "answer=42" >> "$INNOMINATUS_OUTPUT"\n'  # only our own files
    messy = _WHERE + 'mkdir -p a/b && touch a/b/c .hidden\ntouch "$INNOMINATUS_OUTPUT.more"\n'  # its own
    for script in (clean, messy):
        result = await run_policy(script)
        assert result.succeeded, result.error
        await policy.removed()
        assert [d for d in _dirs(result.logs) if d.exists()] == [], script
    assert (await run_policy(clean)).outputs == {"answer": "42"}


async def test_the_directories_of_many_steps_at_once_all_go() -> None:
    """More steps end together than removals may wait: the rest remove their own; none is left."""
    results = await asyncio.gather(*(run_policy(_WHERE) for _ in range(100)))
    await policy.removed()
    dirs = [d for r in results for d in _dirs(r.logs)]
    assert len(dirs) == 200 and len(set(dirs)) == 200
    assert [d for d in dirs if d.exists()] == []


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_sweep_removes_only_directories_of_processes_that_are_gone(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f"innominatus-policy-{dead}-abc", tmp_path / f"innominatus-work-{dead}-def"]
    for directory in stale:
        (directory / "deep").mkdir(parents=True)
        (directory / "deep" / "file").write_text("left behind")
    kept = [
        tmp_path / f"innominatus-work-{alive}-ghi",  # a live process's step (another replica)
        tmp_path / "innominatus-work-xyz",  # not named for a process: cannot tell
        tmp_path / f"unrelated-{dead}-jkl",
    ]
    for directory in kept:
        directory.mkdir()
    (tmp_path / f"innominatus-policy-{dead}-file").write_text("a file, not a step directory")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("x")
    (tmp_path / f"innominatus-work-{dead}-link").symlink_to(elsewhere)

    assert policy.sweep_stale_dirs([str(tmp_path)]) == 2
    assert not any(d.exists() for d in stale)
    assert all(d.is_dir() for d in kept)
    assert (tmp_path / f"innominatus-policy-{dead}-file").is_file()
    assert (elsewhere / "precious").is_file()  # never followed through a link
    assert policy.sweep_stale_dirs([str(tmp_path), str(tmp_path / "missing")]) == 0


async def test_step_directories_are_named_for_their_process() -> None:
    result = await run_policy(_WHERE)
    workdir, own = _dirs(result.logs)
    assert workdir.name.startswith(f"innominatus-work-{os.getpid()}-")
    assert own.name.startswith(f"innominatus-policy-{os.getpid()}-")


async def test_environment_is_minimal_plus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INNOMINATUS_TEST_SECRET", "leaked")
    script = (
        'echo "secret=${INNOMINATUS_TEST_SECRET:-unset}"\necho "mine=$MINE"\necho "out=$INNOMINATUS_OUTPUT"\n'
    )
    result = await run_policy(script, env={"MINE": "value"})
    assert "secret=unset" in result.logs
    assert "mine=value" in result.logs
    assert re.search(r"out=/\S+", result.logs)


async def test_runs_from_a_file_with_stdin_closed() -> None:
    result = await run_policy('echo "script=$0"\nif read -r line; then echo "got $line"; else echo eof; fi\n')
    assert re.search(r"script=/\S+\.sh", result.logs)
    assert "eof" in result.logs


async def test_on_log_line_gets_lines_in_order() -> None:
    lines: list[tuple[str, str]] = []
    # pauses between streams: lines on two pipes are only ordered if they arrive apart
    script = (
        "echo one\nsleep 0.05\necho two >&2\nsleep 0.05\necho three\nsleep 0.05\necho four >&2\n"
        "sleep 0.05\nprintf 'no newline'"
    )

    def on_line(stream: str, line: str) -> None:  # sync callbacks work too
        lines.append((stream, line))

    result = await run_policy(script, on_log_line=on_line)
    assert lines == [
        ("stdout", "one"),
        ("stderr", "two"),
        ("stdout", "three"),
        ("stderr", "four"),
        ("stdout", "no newline"),
    ]
    assert result.logs == "one\ntwo\nthree\nfour\nno newline\n"


async def test_failing_log_callback_does_not_break_the_step() -> None:
    def on_line(stream: str, line: str) -> None:
        raise RuntimeError("sink down")

    result = await run_policy("echo a\necho b", on_log_line=on_line)
    assert result.succeeded
    assert result.logs == "a\nb\n"


async def test_logs_are_capped_keeping_the_head_and_the_tail() -> None:
    script = (
        "echo first line\nyes 0123456789012345678901234567890123456789 | head -n 40000\n"
        "echo '{\"last\": true}'\n"
    )
    result = await run_policy(script)
    assert result.succeeded, result.error
    assert len(result.logs) <= LOG_LIMIT + 200
    assert result.logs.startswith("first line\n0123")
    [marker] = re.findall(r"\[\.\.\. (\d+) characters of output cut here \.\.\.\]\n", result.logs)
    total = len("first line\n") + 40000 * 41 + len('{"last": true}\n')
    assert len(result.logs) - len(marker) - 41 + int(marker) == total  # nothing lost but the middle
    assert result.logs.endswith('{"last": true}\n')
    assert result.outputs == {"last": True}


async def test_a_server_watches_its_step_processes_by_pidfd() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        before = asyncio.get_event_loop_policy().get_child_watcher()
        with pidfd_child_watcher():
            inside = asyncio.get_event_loop_policy().get_child_watcher()
            results = await asyncio.gather(*(run_policy(f"echo step-{i}") for i in range(5)))
        after = asyncio.get_event_loop_policy().get_child_watcher()
    assert isinstance(inside, asyncio.PidfdChildWatcher)  # no thread per step
    assert [r.logs for r in results] == [f"step-{i}\n" for i in range(5)]
    assert after is before  # tests and tools that run steps outside a server keep the default
