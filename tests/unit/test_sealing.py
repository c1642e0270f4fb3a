from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from innominatus.sealing import MASK, SecretBox, is_secret_key, mask, secret_values


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("PASSWORD", True),
        ("connection_string", True),
        ("db_password", True),
        ("client_secret", True),
        ("API_TOKEN", True),
        ("ssh_key", True),
        ("username", False),
        ("host", False),
        ("keys", False),
        ("monkey", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_declared_keys_are_secret_too() -> None:
    assert is_secret_key("dsn", {"dsn"}) and not is_secret_key("dsn")


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "secret.key"
    first = SecretBox.from_settings(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.seal({"password": "hunter2", "host": "h"})
    assert (
        sealed["host"] == "h"
        and sealed["password"].startswith("sealed:v1:")
        and "hunter2" not in sealed["password"]
    )
    again = SecretBox.from_settings(None, path)  # a restart reads the same key
    assert again.open(sealed) == {"password": "hunter2", "host": "h"}
    assert again.seal(sealed) == sealed  # sealing twice changes nothing


def test_environment_key_wins_and_bad_keys_are_clear(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    box = SecretBox.from_settings(key, tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()
    assert box.open_value(box.seal_value([1, 2])) == [1, 2]
    with pytest.raises(ValueError, match="INNOMINATUS_SECRET_KEY: not a Fernet key"):
        SecretBox.from_settings("nope", tmp_path / "k")
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(ValueError, match="does not open with this server's secret key"):
        other.open_value(box.seal_value("x"))


def test_sealing_whole_inputs() -> None:
    box = SecretBox(Fernet.generate_key())
    inputs = {"dsn": "postgresql://u:p@h/db", "size": "small"}
    sealed = box.seal_all(inputs)
    assert list(sealed) == ["$sealed"] and "postgresql" not in str(sealed)
    assert box.open_all(sealed) == inputs
    assert box.seal_all({}) == {}


def test_masking() -> None:
    values = secret_values({"password": "s3cr3t-value", "host": "db", "pin_key": "ab"})
    assert values == {"s3cr3t-value"}  # too short to mask without masking ordinary words
    assert mask("login with s3cr3t-value now", values) == f"login with {MASK} now"
    assert (
        mask("export DB_PASSWORD=whatever; api_token: abc", [])
        == f"export DB_PASSWORD={MASK}; api_token: {MASK}"
    )
    assert mask("nothing to hide here", values) == "nothing to hide here"
    assert mask(None, values) is None
