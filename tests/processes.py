"""Whether a test's process still runs, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def process_gone(pid: int) -> bool:
    """Dead, or a zombie waiting for its reaper (a zombie runs nothing; nothing reaps orphans in some
    containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between open and read
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def alive(pid: int) -> bool:
    return not process_gone(pid)
