"""Secret outputs: which keys are secret, sealing their values at rest (Fernet), and masking known
secret values out of any text before it is stored, streamed or logged."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)

MASK = "********"
SEALED_PREFIX = "sealed:v1:"
_DEFAULT_SECRET = re.compile(
    r"^(password|connection_string|.*_password|.*_secret|.*_token|.*_key)$", re.IGNORECASE
)
_MIN_MASKED_LENGTH = 4  # shorter values would mask ordinary words in logs


def is_secret_key(key: str, declared: Collection[str] = ()) -> bool:
    """Declared `sensitive: true` by the workflow, or secret by name (password, *_token, ...)."""
    return key in declared or bool(_DEFAULT_SECRET.match(key))


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, key: str | None, key_file: Path) -> SecretBox:
        """INNOMINATUS_SECRET_KEY, else the key file (created 0600 on first start, reused after)."""
        if key:
            try:
                return cls(key.encode())
            except ValueError:
                raise ValueError(
                    "INNOMINATUS_SECRET_KEY: not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        if key_file.exists():
            try:
                return cls(key_file.read_bytes().strip())
            except ValueError:
                raise ValueError(f"{key_file}: not a Fernet key") from None
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fresh = Fernet.generate_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(fresh)
        log.info("created secret key file %s", key_file)
        return cls(fresh)

    def seal_value(self, value: Any) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.startswith(SEALED_PREFIX):
            return value
        try:
            return json.loads(self._fernet.decrypt(value[len(SEALED_PREFIX) :].encode()))
        except InvalidToken:
            raise ValueError("a sealed value does not open with this server's secret key") from None

    def seal(
        self, outputs: Mapping[str, Any], declared: Collection[str] = (), known: Collection[str] = ()
    ) -> dict[str, Any]:
        """A copy with every secret value sealed: under a secret key, or equal to a `known` secret
        whatever its key (a password copied to `dsn_password2` or `copy`). Sealed values stay as they are."""
        known = set(known)
        return {
            k: self.seal_value(v)
            if (is_secret_key(k, declared) or (isinstance(v, str) and v in known))
            and not (isinstance(v, str) and v.startswith(SEALED_PREFIX))
            else v
            for k, v in outputs.items()
        }

    def open(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.open_value(v) for k, v in outputs.items()}

    def seal_all(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Seal a whole mapping (workflow inputs, whose secret parts are not known by key)."""
        return {"$sealed": self.seal_value(dict(data))} if data else {}

    def open_all(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if set(data) == {"$sealed"}:
            return dict(self.open_value(data["$sealed"]))
        return dict(data)


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def secret_values(outputs: Mapping[str, Any], declared: Collection[str] = ()) -> set[str]:
    """The plaintext values of the secret keys in `outputs`, as they could appear in text."""
    found: set[str] = set()
    for key, value in outputs.items():
        if is_secret_key(key, declared) and value is not None and not isinstance(value, bool):
            text = value if isinstance(value, str) else str(value)
            if len(text) >= _MIN_MASKED_LENGTH and not text.startswith(SEALED_PREFIX):
                found.add(text)
    return found


# `password=...`, `"api_token": "..."`: a secret-named key printed with its value. Masked even before
# the step's outputs say which values are secret (a live log line is streamed as it is written).
_ASSIGNED_SECRET = re.compile(
    r"""(?P<key>\b[A-Za-z0-9_-]*(?:password|passwd|secret|token|_key|connection_string)["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>[^\s"',;}]+)""",
    re.IGNORECASE,
)


def mask(text: str | None, values: Iterable[str]) -> str | None:
    """`text` with every known secret value replaced by ********; longest first, so no fragment stays."""
    if not text:
        return text
    for value in sorted(set(values), key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, MASK)
    return _ASSIGNED_SECRET.sub(lambda m: m.group("key") + MASK, text)
