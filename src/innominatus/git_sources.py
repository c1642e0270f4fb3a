"""Provider sources in git repositories: cloned into a cache, checked out at the configured ref
(tag, branch or commit) and pinned to the commit it resolved to."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from innominatus.workflows.definition import DefinitionError

GIT_TIMEOUT = 120
_SHA = re.compile(r"[0-9a-f]{40}")


def cache_root() -> Path:
    return Path(os.environ.get("INNOMINATUS_PROVIDER_CACHE") or Path(".innominatus") / "provider-cache")


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # never wait for a password on a terminal
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1:] or ["git failed"])
    return done.stdout.strip()


def checkout(repository: str, ref: str, where: str) -> tuple[Path, str]:
    """The provider's folder at `ref` and the commit it is pinned to; DefinitionError names `where`."""
    key = hashlib.sha256(repository.encode()).hexdigest()[:16]
    mirror = cache_root() / key / "repo"
    try:
        if not (mirror / ".git").is_dir():
            shutil.rmtree(mirror, ignore_errors=True)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            _git("clone", "--quiet", "--no-checkout", "--", repository, str(mirror))
        else:
            _git(
                "fetch",
                "--quiet",
                "--tags",
                "--force",
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                cwd=mirror,
            )
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise DefinitionError(f"{where}.repository: cannot fetch {repository}: {_reason(exc)}") from None
    commit = _resolve(mirror, ref)
    if commit is None:
        raise DefinitionError(f"{where}.ref: '{ref}' is not a tag, branch or commit of {repository}")
    pinned = cache_root() / key / commit
    if not pinned.is_dir():
        try:
            tmp = pinned.with_name(f"{commit}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            # The files of that commit only (no .git): what the catalog reads can never move under it.
            _git("--work-tree", str(tmp.resolve()), "checkout", "--force", commit, "--", ".", cwd=mirror)
            tmp.rename(pinned)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise DefinitionError(
                f"{where}.ref: cannot check out {ref} ({commit[:12]}): {_reason(exc)}"
            ) from None
    return pinned, commit


def _resolve(mirror: Path, ref: str) -> str | None:
    candidates = [f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref]
    for candidate in candidates:
        try:
            commit = _git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=mirror)
        except (RuntimeError, subprocess.TimeoutExpired):
            continue
        if _SHA.fullmatch(commit):
            return commit
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError) and exc.args and isinstance(exc.args[0], list):
        return " ".join(exc.args[0]) or "git failed"
    return str(exc)
