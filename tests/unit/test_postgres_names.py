from __future__ import annotations

import base64
import re

import pytest

from innominatus.workflows.postgres import MAX_IDENTIFIER, object_name, scram_verifier


@pytest.mark.parametrize(
    ("app", "resource", "expected"),
    [
        ("shop", "database", "shop_database"),
        ("pg", "x", "db_pg_x"),
        ("9lives", "cat", "db_9lives_cat"),
    ],
)
def test_plain_names_read_as_they_are(app: str, resource: str, expected: str) -> None:
    assert object_name(app, resource) == expected


@pytest.mark.parametrize(
    ("app", "resource", "readable"),
    [
        ("demo-app", "database", "demo_app_database"),
        ("Shop", "Orders.DB", "shop_orders_db"),
        ("a", 'x"; DROP ROLE postgres; --', "a_x___drop_role_postgres____"),
    ],
)
def test_names_that_could_collide_carry_a_hash(app: str, resource: str, readable: str) -> None:
    name = object_name(app, resource)
    assert re.fullmatch(re.escape(readable) + "_[0-9a-f]{8}", name), name
    assert object_name(app, resource) == name  # stable


def test_names_never_collide() -> None:
    pairs = [("shop", "api-db"), ("shop-api", "db"), ("shop-api-db", "x"), ("shop", "api_db"), ("a-b", "c")]
    names = [object_name(app, resource) for app, resource in pairs]
    assert len(set(names)) == len(names), names
    assert all(re.fullmatch(r"[a-z0-9_]{1,63}", n) and not n[0].isdigit() for n in names)


def test_long_names_are_cut_with_a_hash() -> None:
    a = object_name("a" * 60, "database-one")
    b = object_name("a" * 60, "database-two")
    assert len(a.encode()) <= MAX_IDENTIFIER and len(b.encode()) <= MAX_IDENTIFIER
    assert a != b
    assert re.fullmatch(r"[a-z0-9_]+_[0-9a-f]{8}", a)


def test_the_password_is_set_as_a_scram_verifier() -> None:
    # RFC 7677's test vector: password "pencil", this salt, 4096 iterations.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    assert scram_verifier("pencil", salt) == (
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    )
    assert "pencil" not in scram_verifier("pencil")
