"""event positions after commit, parked resources

Events get an insert id; their `sequence` (the stream position) is given after commit by the sequencer,
so writers no longer serialise on one lock. Resources get `waiting_for` (parked behind a dependency) and
the indexes that keep claims and replays independent of history.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# PostgreSQL: one call numbers the committed, unnumbered events and releases the resources parked behind
# those that became ACTIVE (events.sequencer). Each statement in it takes a fresh snapshot once the lock
# is held, so it sees every earlier numbering; called in autocommit, it costs one round trip.
NUMBER_EVENTS = """
CREATE OR REPLACE FUNCTION innominatus_number_events(batch integer) RETURNS SETOF events
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(518455298);  -- 0x1EE70002, the event-numbering lock
  RETURN QUERY
  WITH numbered AS (
    UPDATE events AS e SET sequence = n.base + n.rn
    FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn,
                 (SELECT coalesce(max(sequence), 0) FROM events) AS base
          FROM events WHERE sequence IS NULL ORDER BY id LIMIT batch) AS n
    WHERE e.id = n.id
    RETURNING e.*
  ), released AS (
    UPDATE resources AS r SET waiting_for = NULL
    FROM numbered, resources AS a
    WHERE numbered.to_state = 'ACTIVE' AND a.id = numbered.resource_id
      AND r.application_id = a.application_id AND r.waiting_for = a.name
    RETURNING r.id
  )
  SELECT * FROM numbered ORDER BY sequence;
END $$;
"""
COLUMNS = "resource_id, application_name, team, from_state, to_state, reason, at"


def _event_indexes() -> None:
    op.create_index("uq_events_sequence", "events", ["sequence"], unique=True)
    op.create_index(
        "ix_events_unsequenced",
        "events",
        ["id"],
        sqlite_where=sa.text("sequence IS NULL"),
        postgresql_where=sa.text("sequence IS NULL"),
    )
    op.create_index("ix_events_application_name_sequence", "events", ["application_name", "sequence"])
    op.create_index("ix_events_team_sequence", "events", ["team", "sequence"])
    op.create_index("ix_events_resource_id", "events", ["resource_id"])


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:  # constraint names are global there: free the old one for the new table
        op.execute("ALTER TABLE events RENAME CONSTRAINT pk_events TO pk_events_old")
    op.rename_table("events", "events_old")
    op.drop_index("ix_events_application_name", table_name="events_old")
    op.drop_index("ix_events_resource_id", table_name="events_old")
    op.create_table(
        "events",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("sequence", BIGINT, nullable=True),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("application_name", sa.String(length=63), nullable=False),
        sa.Column("team", sa.String(length=128), nullable=True),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sqlite_autoincrement=True,
    )
    # Old events keep their positions (clients may resume from them) and take them as ids too.
    copy = (
        f"INSERT INTO events (id, sequence, {COLUMNS}) SELECT sequence, sequence, {COLUMNS} FROM events_old"  # noqa: S608
    )
    op.execute(copy)
    op.drop_table("events_old")
    if postgres:
        op.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'id'), coalesce(max(id), 0) + 1, false) FROM events"
        )
    _event_indexes()

    with op.batch_alter_table("resources") as batch:
        batch.add_column(sa.Column("waiting_for", sa.String(length=63), nullable=True))
    op.create_index(
        "ix_resources_claimable",
        "resources",
        ["created_at"],
        sqlite_where=sa.text("state = 'REQUESTED' AND waiting_for IS NULL"),
        postgresql_where=sa.text("state = 'REQUESTED' AND waiting_for IS NULL"),
    )
    op.create_index("ix_resources_waiting", "resources", ["application_id", "waiting_for"])
    if postgres:
        op.execute(NUMBER_EVENTS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS innominatus_number_events(integer)")
    op.drop_index("ix_resources_waiting", table_name="resources")
    op.drop_index("ix_resources_claimable", table_name="resources")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("waiting_for")
    # Unsequenced events (none once the sequencer has run) cannot be kept without a position.
    op.execute("DELETE FROM events WHERE sequence IS NULL")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE events RENAME CONSTRAINT pk_events TO pk_events_new")
    for name in (
        "uq_events_sequence",
        "ix_events_unsequenced",
        "ix_events_application_name_sequence",
        "ix_events_team_sequence",
        "ix_events_resource_id",
    ):
        op.drop_index(name, table_name="events")
    op.rename_table("events", "events_new")
    op.create_table(
        "events",
        sa.Column("sequence", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("application_name", sa.String(length=63), nullable=False),
        sa.Column("team", sa.String(length=128), nullable=True),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name="pk_events"),
        sqlite_autoincrement=True,
    )
    op.execute(f"INSERT INTO events (sequence, {COLUMNS}) SELECT sequence, {COLUMNS} FROM events_new")  # noqa: S608
    op.drop_table("events_new")
    if postgres:
        op.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'sequence'), coalesce(max(sequence), 0) + 1, false) "
            "FROM events"
        )
    op.create_index("ix_events_application_name", "events", ["application_name"])
    op.create_index("ix_events_resource_id", "events", ["resource_id"])
