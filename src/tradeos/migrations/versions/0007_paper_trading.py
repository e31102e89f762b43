"""paper trading: trading accounts, orders, fills, positions and risk profiles

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:14:03.124092
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tradeos.core.db as tdb

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trading_accounts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("base_currency", sa.String(length=10), nullable=False),
        sa.Column("starting_balance", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("cash_total", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("cash_reserved", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("allow_short", sa.Boolean(), nullable=False),
        sa.Column("trading_state", sa.String(length=10), nullable=False),
        sa.Column("reset_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_trading_accounts_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_accounts")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_trading_accounts_owner_id_name")),
    )
    op.create_table(
        "orders",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("symbol", sa.String(length=41), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("time_in_force", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("quantity", tdb.Quantity(precision=38, scale=18), nullable=False),
        sa.Column("notional", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("filled_quantity", tdb.Quantity(precision=38, scale=18), nullable=False),
        sa.Column("average_fill_price", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("limit_price", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("stop_price", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("stop_loss", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("take_profit", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("triggered", sa.Boolean(), nullable=False),
        sa.Column("reserved", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("fees", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("signal_id", sa.String(length=64), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("created_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_orders_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_orders_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "account_id", "client_order_id", name=op.f("uq_orders_account_id_client_order_id")
        ),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_account_id_status", ["account_id", "status"], unique=False)
        batch_op.create_index(
            "ix_orders_owner_id_created_at", ["owner_id", "created_at"], unique=False
        )

    op.create_table(
        "positions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("symbol", sa.String(length=41), nullable=False),
        sa.Column("quantity", tdb.Quantity(precision=38, scale=18), nullable=False),
        sa.Column("cost", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("realized_pnl", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("fees_paid", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("opened_at", tdb.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_positions_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint("account_id", "symbol", name=op.f("uq_positions_account_id_symbol")),
    )
    op.create_table(
        "risk_profiles",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("max_position_quantity", tdb.Quantity(precision=38, scale=18), nullable=True),
        sa.Column("max_position_pct", tdb.ExactDecimal(precision=38, scale=18), nullable=True),
        sa.Column(
            "max_risk_per_trade_pct", tdb.ExactDecimal(precision=38, scale=18), nullable=True
        ),
        sa.Column("max_daily_loss", tdb.Money(precision=38, scale=18), nullable=True),
        sa.Column("max_daily_loss_pct", tdb.ExactDecimal(precision=38, scale=18), nullable=True),
        sa.Column("max_daily_trades", sa.Integer(), nullable=True),
        sa.Column("max_open_positions", sa.Integer(), nullable=True),
        sa.Column("max_leverage", tdb.ExactDecimal(precision=38, scale=18), nullable=True),
        sa.Column("allowed_symbols", sa.JSON(), nullable=True),
        sa.Column("allowed_asset_classes", sa.JSON(), nullable=True),
        sa.Column("stop_loss_required", sa.Boolean(), nullable=False),
        sa.Column("updated_at", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_risk_profiles_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_risk_profiles")),
    )
    op.create_table(
        "fills",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("fill_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("symbol", sa.String(length=41), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", tdb.Quantity(precision=38, scale=18), nullable=False),
        sa.Column("price", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("fee", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("liquidity", sa.String(length=5), nullable=False),
        sa.Column("realized_pnl", tdb.Money(precision=38, scale=18), nullable=False),
        sa.Column("time", tdb.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_fills_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_fills_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.UniqueConstraint("fill_id", name=op.f("uq_fills_fill_id")),
    )
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.create_index("ix_fills_account_id_time", ["account_id", "time"], unique=False)
        batch_op.create_index("ix_fills_order_id", ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.drop_index("ix_fills_order_id")
        batch_op.drop_index("ix_fills_account_id_time")

    op.drop_table("fills")
    op.drop_table("risk_profiles")
    op.drop_table("positions")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_owner_id_created_at")
        batch_op.drop_index("ix_orders_account_id_status")

    op.drop_table("orders")
    op.drop_table("trading_accounts")
