"""backtests: backtest and optimization runs with their stored results

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:44:23.323076
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tradeos.core.db as tdb

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backtests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "strategy_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("total_return", tdb.ExactDecimal(precision=38, scale=18), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_backtests_owner_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_backtests_strategy_id_strategies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtests")),
    )
    with op.batch_alter_table("backtests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backtests_owner_id_created_at", ["owner_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_backtests_strategy_id", ["strategy_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("backtests", schema=None) as batch_op:
        batch_op.drop_index("ix_backtests_strategy_id")
        batch_op.drop_index("ix_backtests_owner_id_created_at")

    op.drop_table("backtests")
