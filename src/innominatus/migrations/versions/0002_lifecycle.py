"""lifecycle: dependencies, reusable names, application deletion, workflow deadlines

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
LIVE = sa.text("state != 'DELETED'")


def upgrade() -> None:
    with op.batch_alter_table("applications") as batch:
        batch.add_column(sa.Column("delete_requested_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("resources") as batch:
        batch.add_column(sa.Column("depends_on", JSON, nullable=False, server_default="[]"))
        batch.drop_constraint("uq_resources_app_name", type_="unique")
    op.create_index(
        "uq_resources_live_name",
        "resources",
        ["application_id", "name"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    with op.batch_alter_table("workflow_executions") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_column("deadline_at")
    op.drop_index("uq_resources_live_name", table_name="resources")
    with op.batch_alter_table("resources") as batch:
        batch.create_unique_constraint("uq_resources_app_name", ["application_id", "name"])
        batch.drop_column("depends_on")
    with op.batch_alter_table("applications") as batch:
        batch.drop_column("delete_requested_at")
