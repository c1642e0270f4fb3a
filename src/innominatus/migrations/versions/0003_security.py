"""security: API tokens, and the owning team on resources and executions

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("team", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash")),
    )
    for table in ("resources", "workflow_executions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("team", sa.String(length=128), nullable=True))
            batch.create_index(f"ix_{table}_team", ["team"], unique=False)
    # Rows from before teams existed take their application's team.
    op.execute(
        "UPDATE resources SET team = (SELECT team FROM applications WHERE applications.id = resources.application_id)"
    )
    op.execute(
        "UPDATE workflow_executions SET team = (SELECT team FROM resources "
        "WHERE resources.id = workflow_executions.resource_id)"
    )


def downgrade() -> None:
    for table in ("workflow_executions", "resources"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_team")
            batch.drop_column("team")
    op.drop_table("tokens")
