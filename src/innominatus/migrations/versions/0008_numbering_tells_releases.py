"""the numbering function tells which ACTIVE events released resources parked behind them

Every ACTIVE event woke the engine for a claim pass, in case the numbering released something parked
behind that resource: a query per resource (a round trip on PostgreSQL), nearly always finding nothing.
The function now returns, next to each event it numbered, whether that event released any, so only
those wake a claim pass. PostgreSQL only: on SQLite the writer releases inside its own transaction.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

from innominatus.migrations.earlier import number_events_of

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0006, with the event as one column of the table's own row type (so it follows the table) and
# `released`: the event made its resource ACTIVE and resources that waited for it are claimable now.
NUMBER_EVENTS = """
CREATE FUNCTION innominatus_number_events(batch integer, origin text)
RETURNS TABLE(event events, released boolean)
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
    RETURNING e
  ), freed AS (
    UPDATE resources AS r SET waiting_for = NULL
    FROM numbered, resources AS a
    WHERE (numbered.e).to_state = 'ACTIVE' AND a.id = (numbered.e).resource_id
      AND r.application_id = a.application_id AND r.waiting_for = a.name
    RETURNING (numbered.e).id AS by_event
  )
  SELECT numbered.e, EXISTS (SELECT 1 FROM freed WHERE freed.by_event = (numbered.e).id)
  FROM numbered ORDER BY (numbered.e).sequence;
  GET DIAGNOSTICS numbered_count = ROW_COUNT;
  IF numbered_count > 0 THEN
    PERFORM pg_notify('innominatus_events', origin || ' ' || (SELECT max(sequence) FROM events));
  END IF;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS innominatus_number_events(integer, text)")
        op.execute(NUMBER_EVENTS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS innominatus_number_events(integer, text)")
        op.execute(number_events_of("0006_replicas.py"))
