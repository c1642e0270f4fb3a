"""one log of state changes: `events` is also the audit trail

Every state change has always written the same row twice, once to `resource_transitions` and once to
`events` (resource, from, to, reason, time). Only `events` stays; a resource's transitions are its events.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("resource_transitions") as batch:
        batch.drop_index("ix_resource_transitions_resource_id")
    op.drop_table("resource_transitions")


def downgrade() -> None:
    op.create_table(
        "resource_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resources.id"],
            name="fk_resource_transitions_resource_id_resources",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_resource_transitions"),
    )
    op.create_index("ix_resource_transitions_resource_id", "resource_transitions", ["resource_id"])
    op.execute(
        "INSERT INTO resource_transitions (resource_id, from_state, to_state, reason, at) "
        "SELECT e.resource_id, e.from_state, e.to_state, e.reason, e.at FROM events AS e "
        "WHERE EXISTS (SELECT 1 FROM resources AS r WHERE r.id = e.resource_id) ORDER BY e.id"
    )
