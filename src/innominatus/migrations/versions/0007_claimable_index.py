"""claimable index leads with the claim's own conditions

`ix_resources_claimable` covered `created_at` only. With thousands of parked REQUESTED rows, SQLite (no
statistics) preferred `ix_resources_state` for a claim pass and walked every parked row, 1.6 ms a pass
for 10,000 of them. Leading with `state, waiting_for` gives the partial index two equality terms, so
both planners take it and a pass costs the batch again.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = "state = 'REQUESTED' AND waiting_for IS NULL"


def _claimable(columns: list[str]) -> None:
    op.drop_index("ix_resources_claimable", table_name="resources")
    op.create_index(
        "ix_resources_claimable",
        "resources",
        columns,
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
    )


def upgrade() -> None:
    _claimable(["state", "waiting_for", "created_at"])


def downgrade() -> None:
    _claimable(["created_at"])
