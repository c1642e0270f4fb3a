"""replicas: fencing tokens, the runner's name, events announced across processes

`lease_token` grows with every claim of a run: a write that names an older token is refused, so an engine
that lost its lease (paused, cut off) cannot overwrite what the new owner recorded. `runner` keeps which
replica ran the workflow after the lease is gone. `rate_hits` counts mutations per token for all replicas. On PostgreSQL the numbering function announces the
highest position it gave (NOTIFY), so every replica hears of every event at once.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from innominatus.migrations.earlier import number_events_of

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The payload is "<origin> <highest position>": a replica skips what it announced itself.
NUMBER_EVENTS = """
CREATE OR REPLACE FUNCTION innominatus_number_events(batch integer, origin text) RETURNS SETOF events
LANGUAGE plpgsql AS $$
DECLARE
  numbered_count bigint;
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
  GET DIAGNOSTICS numbered_count = ROW_COUNT;
  IF numbered_count > 0 THEN
    PERFORM pg_notify('innominatus_events', origin || ' ' || (SELECT max(sequence) FROM events));
  END IF;
END $$;
"""


def upgrade() -> None:
    with op.batch_alter_table("workflow_executions") as batch:
        batch.add_column(sa.Column("lease_token", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("runner", sa.String(length=64), nullable=True))
    op.create_table(
        "rate_hits",  # mutations per token per window, counted by every replica (ratelimit.py)
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "bucket", name="pk_rate_hits"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NUMBER_EVENTS)
        op.execute("DROP FUNCTION IF EXISTS innominatus_number_events(integer)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS innominatus_number_events(integer, text)")
        op.execute(number_events_of("0004_event_positions.py"))
    op.drop_table("rate_hits")
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_column("runner")
        batch.drop_column("lease_token")
