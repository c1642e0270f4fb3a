from __future__ import annotations

import re

import pytest

from innominatus.workflows.postgres import MAX_IDENTIFIER, object_name


@pytest.mark.parametrize(
    ("app", "resource", "expected"),
    [
        ("demo-app", "database", "demo_app_database"),
        ("Shop", "Orders.DB", "shop_orders_db"),
        ("pg", "x", "db_pg_x"),
        ("9lives", "cat", "db_9lives_cat"),
        ("a", 'x"; DROP ROLE postgres; --', "a_x___drop_role_postgres____"),
    ],
)
def test_names(app: str, resource: str, expected: str) -> None:
    assert object_name(app, resource) == expected


def test_long_names_are_cut_with_a_hash() -> None:
    a = object_name("a" * 60, "database-one")
    b = object_name("a" * 60, "database-two")
    assert len(a.encode()) <= MAX_IDENTIFIER and len(b.encode()) <= MAX_IDENTIFIER
    assert a != b
    assert re.fullmatch(r"[a-z0-9_]+_[0-9a-f]{8}", a)
