"""The `policy` step type: runs a rendered bash script in a throwaway directory.

The script runs from a file (not ``bash -c``) in a fresh working directory, in its own session so that
everything it starts can be killed as one process group: on timeout, on cancellation, and when the
script has finished (background processes do not outlive their step).

Outputs: the last complete JSON object printed on stdout, merged with ``key=value`` lines written to
the file named by ``$INNOMINATUS_OUTPUT`` (the file wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOG_LIMIT", "StepResult", "pidfd_child_watcher", "run_policy", "sweep_stale_dirs"]

log = logging.getLogger(__name__)

LOG_LIMIT = 1024 * 1024  # characters of an attempt's logs kept: its head and its tail
_LOG_HEAD = LOG_LIMIT // 4
_STDOUT_LIMIT = 1024 * 1024  # bytes of stdout kept for finding the JSON outputs
_STDERR_TAIL_LINES = 10
_STDERR_TAIL_CHARS = 1000
_KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_DRAIN_GRACE = 1.0  # seconds to wait for pipes after bash exits before killing what holds them
_MAX_LINE = 256 * 1024  # a "line" longer than this is cut into pieces

LogLine = Callable[[str, str], Awaitable[None] | None]


@dataclass
class StepResult:
    succeeded: bool
    logs: str  # stdout+stderr interleaved in arrival order, as text
    outputs: dict[str, Any]
    error: str | None  # e.g. "exit code 3: <stderr tail>" / "timed out after 2s: <stderr tail>"


class _Logs:
    """Both streams, line by line, in arrival order; keeps at most LOG_LIMIT characters: the first
    quarter (how it started) and the last lines (how it ended), with a marker where it was cut."""

    def __init__(self, on_log_line: LogLine | None) -> None:
        self._head: list[str] = []
        self._head_size = 0
        self._lines: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._stdout: deque[str] = deque()
        self._stdout_size = 0
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._on_log_line = on_log_line

    async def add(self, stream: str, line: str) -> None:
        text = line + "\n"
        if not self._dropped and not self._lines and self._head_size + len(text) <= _LOG_HEAD:
            self._head.append(text)
            self._head_size += len(text)
        else:
            self._lines.append(text)
            self._size += len(text)
        while self._size > LOG_LIMIT - self._head_size and len(self._lines) > 1:
            dropped = self._lines.popleft()
            self._size -= len(dropped)
            self._dropped += len(dropped)
        if stream == "stdout":
            self._stdout.append(text)
            self._stdout_size += len(text)
            while self._stdout_size > _STDOUT_LIMIT and len(self._stdout) > 1:
                self._stdout_size -= len(self._stdout.popleft())
        else:
            self.stderr_tail.append(line)
        if self._on_log_line is not None:
            try:
                result = self._on_log_line(stream, line)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # a broken log sink must not stall the pipes (and so the script)
                log.exception("on_log_line callback failed")

    @property
    def text(self) -> str:
        head, tail = "".join(self._head), "".join(self._lines)
        if self._dropped:
            return f"{head}[... {self._dropped} characters of output cut here ...]\n{tail}"
        return head + tail

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    def stderr_summary(self) -> str:
        tail = "\n".join(self.stderr_tail).strip()
        return tail[-_STDERR_TAIL_CHARS:]


async def _pump(reader: asyncio.StreamReader | None, stream: str, logs: _Logs) -> None:
    if reader is None:
        return
    pending = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        while len(pending) > _MAX_LINE:
            lines.append(pending[:_MAX_LINE])
            pending = pending[_MAX_LINE:]
        for raw in lines:
            await logs.add(stream, raw.decode("utf-8", errors="replace").removesuffix("\r"))
    if pending:
        await logs.add(stream, pending.decode("utf-8", errors="replace").removesuffix("\r"))


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group (zombies wait for a reaper, not for us)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the ")" closing the command name: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _kill_group(pgid: int) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        deadline = time.monotonic() + _KILL_GRACE
        # polling: nothing signals us when unrelated group members die
        while time.monotonic() < deadline and _group_alive(pgid):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        # also reached when cancelled while waiting: never leave the group running
        with contextlib.suppress(ProcessLookupError):
            if _group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)


async def _wait_exit(proc: asyncio.subprocess.Process) -> None:
    """Wait until bash exits, even while a background child still holds its pipes open.

    (On Python 3.11 ``Process.wait()`` only returns once every pipe is closed too.)
    """
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=0.05)
    finally:
        waiter.cancel()


RUN_MARKER = "INNOMINATUS_RUN"  # in every script's environment: the execution it belongs to


def kill_strays(run_id: str) -> list[int]:
    """Kill the process groups of scripts still running for `run_id` on this host (e.g. children of a
    server that was killed with -9), so a resumed step never runs twice at once. Returns the groups."""
    wanted = f"{RUN_MARKER}={run_id}".encode()
    groups: set[int] = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            groups.add(os.getpgid(int(entry.name)))
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return sorted(groups)


def _outputs_of_failed(stdout: str, output_path: Path) -> dict[str, Any]:
    outputs: dict[str, Any] = dict(_last_json_object(stdout) or {})
    with contextlib.suppress(_OutputFileError, OSError):  # a broken file adds nothing to the failure
        outputs.update(_read_output_file(output_path))
    return outputs


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in text; objects may span lines and sit among other output."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    pos = text.find("{")
    while pos >= 0:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(value, dict):
            found = value
        pos = text.find("{", end)  # skip objects nested inside this one
    return found


class _OutputFileError(Exception):
    pass


def _read_output_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values: dict[str, str] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _OutputFileError(f"$INNOMINATUS_OUTPUT line {number} is not key=value: {line[:200]!r}")
        values[key] = value.strip()
    return values


def _find_bash() -> str | None:
    if os.access("/bin/bash", os.X_OK):
        return "/bin/bash"
    return shutil.which("bash")


async def run_policy(
    script: str,
    *,
    timeout: float = 300,  # noqa: ASYNC109 - the step's own limit, part of the step contract
    env: Mapping[str, str] | None = None,
    on_log_line: LogLine | None = None,
    on_group: Callable[[int], None] | None = None,
) -> StepResult:
    """Run script with bash; see the module docstring for the contract. `on_group` is told the process
    group the script runs in, as soon as it has started."""
    bash = _find_bash()
    if bash is None:
        return StepResult(False, "", {}, "bash not found (looked for /bin/bash and bash on PATH)")
    # base holds our files; the script gets an empty directory of its own as cwd and TMPDIR
    base = Path(tempfile.mkdtemp(prefix=f"{_OURS}policy-{os.getpid()}-", dir=_own_files_root()))
    script_path, output_path = base / "script.sh", base / "outputs.env"
    workdir: Path | None = None
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f"{_OURS}work-{os.getpid()}-"))
        _write_new(script_path, script.encode("utf-8"))
        child_env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(workdir)),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(workdir),
        }
        child_env.update(env or {})
        child_env["INNOMINATUS_OUTPUT"] = str(output_path)
        return await _run(bash, script_path, workdir, child_env, output_path, timeout, on_log_line, on_group)
    finally:
        _remove_soon(base, (script_path, output_path), workdir)


# Our own files (the script, and the outputs file it may write) sit apart from the script's working
# directory: on the tmpfs at /dev/shm where the machine has one. On the benchmark machine, whose /tmp is
# ext4 (mounted with discard), a step's directories and files cost 1.0-1.6 ms of CPU with 16 steps at once,
# 0.5-0.9 ms with our files on the tmpfs (the script itself: about 1.0 ms). The working directory stays in
# the temp dir: what a script writes there (a terraform init: hundreds of MB) must not fill memory, nor
# a container's 64 MB /dev/shm.
_TMPFS = "/dev/shm"  # noqa: S108 - only a root for mkdtemp, whose directories are private (0700)


@functools.cache
def _own_files_root() -> str | None:
    """Where our files' directories go: the tmpfs, if this process may create there; else (None) the
    temp dir."""
    return _TMPFS if os.path.isdir(_TMPFS) and os.access(_TMPFS, os.W_OK | os.X_OK) else None


# A step's directories are named for the process that made them, so that what a killed process left
# behind can be told from what a live one (another replica on this machine) is using.
_OURS = "innominatus-"
_STEP_DIR = re.compile(rf"{_OURS}(?:policy|work)-(\d+)-")


def sweep_stale_dirs(roots: Collection[str] | None = None) -> int:
    """Remove step directories whose process is gone (a server or step host killed mid-step); how many.
    Only our user's, only directories (never through a link), never a live process's."""
    if roots is None:
        roots = {tempfile.gettempdir(), _own_files_root() or tempfile.gettempdir()}
    removed = 0
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            match = _STEP_DIR.match(entry.name)
            try:
                if not match or not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(match[1])):
                    continue
            except OSError:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


# The step's directory goes in a thread of its own: on a disk-backed /tmp its few syscalls took 0.5-0.7 ms
# (ext4 on the benchmark machine; tmpfs: 0.1 ms), which neither the loop nor the run's finish need wait
# for. One thread, in order; past _REMOVALS_WAITING not yet done, the step removes its own (bounded).
_REMOVALS_WAITING = 64
_removals = ThreadPoolExecutor(max_workers=1, thread_name_prefix="innominatus-step-dirs")
_removal_slots = threading.BoundedSemaphore(_REMOVALS_WAITING)


def _remove_soon(base: Path, files: tuple[Path, ...], workdir: Path | None) -> None:
    if not _removal_slots.acquire(blocking=False):
        _remove(base, files, workdir)
        return

    def remove() -> None:
        try:
            _remove(base, files, workdir)
        finally:
            _removal_slots.release()

    _removals.submit(remove)


async def removed() -> None:
    """Once this returns, the directories of the steps that ended before it was called are gone."""
    await asyncio.wrap_future(_removals.submit(lambda: None))


def _remove(base: Path, files: tuple[Path, ...], workdir: Path | None) -> None:
    """The step's directories, gone. What we put there is known, so a few calls remove them instead of
    rmtree's walk (a step's CPU in the server: 0.91-0.94 → 0.80-0.83 ms); whatever the script left
    behind takes the walk."""
    for directory, ours in ((base, files), (workdir, ())):
        if directory is None:
            continue
        try:
            for path in ours:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            os.rmdir(directory)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def pidfd_child_watcher() -> Iterator[None]:
    """For a server's lifetime, on its running loop: Python 3.11 learns of a child's exit from a thread
    per child (ThreadedChildWatcher); a pidfd in the event loop costs a third less CPU per step. 3.12
    does this by itself; without pidfds (Linux before 5.3) nothing changes."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        yield
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
        previous = policy.get_child_watcher()
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        policy.set_child_watcher(watcher)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy.set_child_watcher(previous)
            watcher.close()


async def _run(
    bash: str,
    script_path: Path,
    workdir: Path,
    child_env: dict[str, str],
    output_path: Path,
    limit: float,
    on_log_line: LogLine | None,
    on_group: Callable[[int], None] | None,
) -> StepResult:
    logs = _Logs(on_log_line)
    proc = await asyncio.create_subprocess_exec(
        bash,
        str(script_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
        env=child_env,
        start_new_session=True,
    )
    pgid = proc.pid  # session leader: its pid is the group id
    if on_group is not None:
        on_group(pgid)
    pumps = asyncio.gather(_pump(proc.stdout, "stdout", logs), _pump(proc.stderr, "stderr", logs))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(limit):
                await _wait_exit(proc)
                # a background child may still hold the pipes: give it a moment, then it is killed below
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pumps), _DRAIN_GRACE)
        except TimeoutError:
            timed_out = True
    finally:
        await _kill_group(pgid)
        if proc.returncode is None:
            await proc.wait()
        try:
            # after the kill the pipes close; don't hang on a process that escaped the group
            await asyncio.wait_for(asyncio.shield(pumps), _DRAIN_GRACE)
        except TimeoutError:
            pass
        finally:
            if not pumps.done():
                pumps.cancel()

    stderr_tail = logs.stderr_summary()
    suffix = f": {stderr_tail}" if stderr_tail else ""
    # Even a failed step's outputs are read: the engine learns which secrets it may have printed.
    written = _outputs_of_failed(logs.stdout, output_path)
    if timed_out:
        return StepResult(False, logs.text, written, f"timed out after {_format_seconds(limit)}{suffix}")
    code = proc.returncode
    if code != 0:
        assert code is not None
        if code < 0:
            try:
                reason = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                reason = f"killed by signal {-code}"
        else:
            reason = f"exit code {code}"
        return StepResult(False, logs.text, written, reason + suffix)
    outputs: dict[str, Any] = dict(_last_json_object(logs.stdout) or {})
    try:
        outputs.update(_read_output_file(output_path))
    except _OutputFileError as exc:
        return StepResult(False, logs.text, outputs, str(exc))
    return StepResult(True, logs.text, outputs, None)
