"""strategies: users' formulas and their tags

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:05:30.793690
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tradeos.core.db as tdb

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "strategies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("formula", sa.Text(), nullable=False),
        sa.Column("declared_params", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("default_params", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("rating_average", sa.Float(), nullable=True),
        sa.Column("rating_count", sa.Integer(), nullable=False),
        sa.Column("subscriber_count", sa.Integer(), nullable=False),
        sa.Column("performance", tdb.ExactDecimal(precision=38, scale=18), nullable=True),
        sa.Column("performance_updated_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_strategies_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategies")),
    )
    with op.batch_alter_table("strategies", schema=None) as batch_op:
        batch_op.create_index("ix_strategies_category", ["category"], unique=False)
        batch_op.create_index(
            "ix_strategies_is_public_created_at", ["is_public", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_strategies_owner_id_created_at", ["owner_id", "created_at"], unique=False
        )

    op.create_table(
        "strategy_tags",
        sa.Column(
            "strategy_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tag", sa.String(length=30), nullable=False),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_strategy_tags_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("strategy_id", "tag", name=op.f("pk_strategy_tags")),
    )
    with op.batch_alter_table("strategy_tags", schema=None) as batch_op:
        batch_op.create_index(
            "ix_strategy_tags_tag_strategy_id", ["tag", "strategy_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("strategy_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_strategy_tags_tag_strategy_id")

    op.drop_table("strategy_tags")
    with op.batch_alter_table("strategies", schema=None) as batch_op:
        batch_op.drop_index("ix_strategies_owner_id_created_at")
        batch_op.drop_index("ix_strategies_is_public_created_at")
        batch_op.drop_index("ix_strategies_category")

    op.drop_table("strategies")
